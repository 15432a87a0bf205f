-- agentfleet Neovim config: sensible editing defaults for agents and the humans who ssh in.
-- Uses only APIs present in Neovim 0.6 (no vim.keymap, no nvim_create_autocmd).
require('agentfleet.options')
require('agentfleet.keymaps')
require('agentfleet.autocmds')
require('agentfleet.lsp')
vim.g.agentfleet_nvim = 1
