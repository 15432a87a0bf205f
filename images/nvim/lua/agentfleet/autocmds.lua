-- Autocommands, as Vim script augroups (nvim_create_autocmd arrived in 0.7).
if vim.fn.executable('rg') == 1 then
  vim.opt.grepprg = 'rg --vimgrep --smart-case'
end
vim.opt.path:append('**')

vim.cmd([[
  augroup agentfleet
    autocmd!
    " Per-language indentation where the language has a convention.
    autocmd FileType go,make setlocal noexpandtab tabstop=4 shiftwidth=4 softtabstop=0
    autocmd FileType yaml,json,javascript,typescript,lua,html,css,dart,ruby,sh setlocal shiftwidth=2 tabstop=2 softtabstop=2
    autocmd FileType markdown,gitcommit,text setlocal wrap linebreak spell
    " Back to the last cursor position when reopening a file.
    autocmd BufReadPost * if line("'\"") > 1 && line("'\"") <= line("$") | execute "normal! g`\"" | endif
    " Flash the yanked text.
    autocmd TextYankPost * silent! lua vim.highlight.on_yank({ timeout = 150 })
    " Strip trailing whitespace on save, except where it is meaningful.
    autocmd BufWritePre * if index(['markdown', 'diff'], &filetype) < 0 | let s:v = winsaveview() | keeppatterns %s/\s\+$//e | call winrestview(s:v) | endif
    " Re-read files changed outside (an agent edits files while you look at them).
    autocmd FocusGained,BufEnter,CursorHold * silent! checktime
  augroup END
]])
