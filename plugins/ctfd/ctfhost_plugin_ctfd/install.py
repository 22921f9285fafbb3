"""``flask ctfhost ctfd-install``: put the CTFd-side plugin into a CTFd checkout."""

import os
import re
import shutil

import click

PLUGIN_NAME = "ctfhost"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ctfd_plugin")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


class InstallError(click.ClickException):
    """A refused installation; the message says what to do."""


def ctfd_version(ctfd_root):
    """CTFd's __version__ from CTFd/__init__.py, or None."""
    try:
        with open(os.path.join(ctfd_root, "CTFd", "__init__.py"), encoding="utf-8") as handle:
            match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', handle.read(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1) if match else None


def install(ctfd_root, link=False, force=False, source=SOURCE):
    """Copy (or symlink) the plugin to CTFd/plugins/ctfhost; returns (target, CTFd version)."""
    ctfd_root = os.path.abspath(ctfd_root)
    plugins = os.path.join(ctfd_root, "CTFd", "plugins")
    if not os.path.isfile(os.path.join(ctfd_root, "CTFd", "__init__.py")) or not os.path.isdir(plugins):
        raise InstallError(
            f"{ctfd_root} is not a CTFd checkout: expected CTFd/__init__.py and CTFd/plugins/ in it "
            "(give the directory holding CTFd's serve.py and requirements.txt)"
        )
    target = os.path.join(plugins, PLUGIN_NAME)
    if os.path.lexists(target):
        if not force:
            raise InstallError(f"{target} already exists; use --force to replace it")
        if os.path.islink(target) or os.path.isfile(target):
            os.unlink(target)
        else:
            shutil.rmtree(target)
    if link:
        os.symlink(source, target, target_is_directory=True)
    else:
        shutil.copytree(source, target, ignore=IGNORED)
    return target, ctfd_version(ctfd_root)


@click.command("ctfd-install")
@click.argument("ctfd_path", type=click.Path(file_okay=False, exists=True))
@click.option("--link", is_flag=True, help="Symlink the plugin instead of copying it (follows upgrades of this package).")
@click.option("--force", is_flag=True, help="Replace an existing CTFd/plugins/ctfhost.")
def ctfd_install_command(ctfd_path, link, force):
    """Install the CTFd plugin into the CTFd checkout at CTFD_PATH (as CTFd/plugins/ctfhost)."""
    target, version = install(ctfd_path, link=link, force=force)
    click.echo(f"{'linked' if link else 'copied'} the ctfhost plugin to {target}")
    if version and not version.startswith("3."):
        click.echo(f"warning: CTFd {version} found; the plugin is made for CTFd 3.8", err=True)
    click.echo(
        "next: restart CTFd, open Admin > ctfhost > Settings (or set CTFHOST_URL, CTFHOST_API_KEY, "
        "CTFHOST_CTFD_PUBLIC_URL), and set CTFHOST_AUTH_SIGNIN_URL on ctfhost to "
        "<CTFd public URL>/plugins/ctfhost/access?instance={instance_id}&next={next}"
    )
