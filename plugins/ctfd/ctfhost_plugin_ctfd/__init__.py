"""ctfhost scoreboard plugin for CTFd: the ``ctfd-install`` command and, as package data, the CTFd-side plugin.

The CTFd side (``ctfd_plugin/``) runs inside CTFd and never imports ctfhost;
this module only adds ``flask ctfhost ctfd-install`` to ctfhost's CLI.
"""

from ctfhost.plugin_api import hookimpl

from ctfhost_plugin_ctfd.install import ctfd_install_command

__version__ = "0.1.0"


@hookimpl
def register_commands(cli):
    cli.add_command(ctfd_install_command)
