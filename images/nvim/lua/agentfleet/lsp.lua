-- Built-in LSP client, started only for servers already on PATH (e.g. after `go install
-- golang.org/x/tools/gopls@latest`): nothing is downloaded. Neovim 0.6 API (vim.lsp.start_client).
local servers = {
  go = { cmd = { 'gopls' }, markers = { 'go.mod', '.git' } },
  rust = { cmd = { 'rust-analyzer' }, markers = { 'Cargo.toml', '.git' } },
  python = { cmd = { 'pylsp' }, markers = { 'pyproject.toml', 'setup.py', '.git' } },
  c = { cmd = { 'clangd' }, markers = { 'compile_commands.json', '.git' } },
  cpp = { cmd = { 'clangd' }, markers = { 'compile_commands.json', '.git' } },
  typescript = { cmd = { 'typescript-language-server', '--stdio' }, markers = { 'package.json', '.git' } },
  javascript = { cmd = { 'typescript-language-server', '--stdio' }, markers = { 'package.json', '.git' } },
}

local clients = {}  -- "<cmd>|<root>" -> client id

local function find_root(bufnr, markers)
  local path = vim.api.nvim_buf_get_name(bufnr)
  local dir = vim.fn.fnamemodify(path, ':p:h')
  while dir ~= '' do
    for _, marker in ipairs(markers) do
      if vim.loop.fs_stat(dir .. '/' .. marker) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ':h')
    if parent == dir then break end
    dir = parent
  end
  return vim.fn.getcwd()
end

local M = {}

function M.attach(bufnr, filetype)
  local server = servers[filetype]
  if not server or vim.fn.executable(server.cmd[1]) ~= 1 then
    return
  end
  local root = find_root(bufnr, server.markers)
  local key = server.cmd[1] .. '|' .. root
  if not clients[key] or vim.lsp.get_client_by_id(clients[key]) == nil then
    clients[key] = vim.lsp.start_client({ cmd = server.cmd, root_dir = root, name = server.cmd[1] })
  end
  if clients[key] then
    vim.lsp.buf_attach_client(bufnr, clients[key])
  end
end

vim.cmd([[
  augroup agentfleet_lsp
    autocmd!
    autocmd FileType * lua require('agentfleet.lsp').attach(tonumber(vim.fn.expand('<abuf>')), vim.fn.expand('<amatch>'))
  augroup END
]])

return M
