"""The operator's console: server-rendered admin pages under /admin (see ctfhost.admin.pages)."""
