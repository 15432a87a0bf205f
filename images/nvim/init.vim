" The agentfleet Neovim config, installed as /etc/xdg/nvim. Written for Ubuntu 22.04's Neovim 0.6.1:
" no plugin manager, nothing fetched at run time. Neovim 0.6 reads init.vim (not init.lua) from
" $XDG_CONFIG_DIRS, so this file only hands over to lua/agentfleet/. A user's own
" ~/.config/nvim/init.vim or init.lua replaces all of it.
lua require('agentfleet')
