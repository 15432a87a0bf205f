-- Editor options.
local o = vim.opt

o.number = true
o.relativenumber = true
o.signcolumn = 'yes'
o.cursorline = true
o.scrolloff = 4
o.sidescrolloff = 8
o.wrap = false
o.list = true
o.listchars = { tab = '» ', trail = '·', nbsp = '␣' }

o.expandtab = true
o.shiftwidth = 4
o.tabstop = 4
o.softtabstop = 4
o.smartindent = true

o.ignorecase = true
o.smartcase = true
o.inccommand = 'split'

o.splitright = true
o.splitbelow = true
o.mouse = 'a'
o.updatetime = 300
o.timeoutlen = 500

-- Persistent undo under ~/.local/share/nvim (on the agent's data disk), no swap files to trip over.
o.undofile = true
o.swapfile = false

o.completeopt = { 'menuone', 'noselect' }
o.wildmode = { 'longest:full', 'full' }
o.laststatus = 2
o.statusline = '%f %h%m%r%=%{&filetype}  %l:%c  %p%%'

vim.g.mapleader = ' '
vim.g.maplocalleader = ' '
vim.g.netrw_banner = 0
vim.g.netrw_liststyle = 3

vim.cmd('colorscheme desert')
