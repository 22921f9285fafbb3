"""ctfhost for CTFd 3.8: players launch private challenge instances on ctfhost from the challenge window.

This folder is a CTFd plugin: it is installed as ``CTFd/plugins/ctfhost``
(``flask --app ctfhost ctfhost ctfd-install PATH_TO_CTFD``) and CTFd calls
:func:`load`. It talks to ctfhost only over its REST API with the API key,
using nothing CTFd does not ship. Only :func:`load` and the modules it
imports touch CTFd; the modules deciding things (client, player, signin,
grading, messages, settings, slugs, challenge_spec) import without it.
"""

import os

__version__ = "0.1.0"


def load(app):
    from .settings import PLUGIN_NAME

    folder = os.path.basename(os.path.dirname(os.path.abspath(__file__)))
    if folder != PLUGIN_NAME:
        raise RuntimeError(
            f"the ctfhost plugin must be installed as CTFd/plugins/{PLUGIN_NAME}, not CTFd/plugins/{folder}: "
            f"its pages and ctfhost's sign-in URL use /plugins/{PLUGIN_NAME}/"
        )

    from CTFd.api import CTFd_API_v1
    from CTFd.plugins import register_admin_plugin_menu_bar, register_plugin_assets_directory, register_user_page_menu_bar
    from CTFd.plugins.challenges import CHALLENGE_CLASSES
    from CTFd.plugins.migrations import upgrade

    from .api import ctfhost_namespace
    from .challenge_type import CtfhostChallengeType
    from .views import ctfhost_pages, launch_check

    upgrade(plugin_name=PLUGIN_NAME)
    CHALLENGE_CLASSES[CtfhostChallengeType.id] = CtfhostChallengeType
    register_plugin_assets_directory(app, base_path=CtfhostChallengeType.route)
    CTFd_API_v1.add_namespace(ctfhost_namespace, f"/plugins/{PLUGIN_NAME}")
    app.register_blueprint(ctfhost_pages)
    app.jinja_env.globals["ctfhost_launch_check"] = launch_check
    register_user_page_menu_bar("My instances", f"plugins/{PLUGIN_NAME}/instances")
    register_user_page_menu_bar("API tokens", f"plugins/{PLUGIN_NAME}/tokens")
    register_admin_plugin_menu_bar("ctfhost", "/admin/ctfhost")
