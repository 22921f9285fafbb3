"""python -m ctfhost_dev demo | demo-stop | build-image [TAG]"""

import sys

from ctfhost_plugin_docker.testing import build_image

from ctfhost_dev.demo import DEMO_IMAGE, demo, demo_stop

USAGE = "usage: python -m ctfhost_dev demo | demo-stop | build-image [TAG]"


def main(argv):
    if argv == ["demo"]:
        demo()
    elif argv == ["demo-stop"]:
        demo_stop()
    elif argv[:1] == ["build-image"] and len(argv) <= 2:
        print(build_image(*(argv[1:] or [DEMO_IMAGE]), content="hello from a ctfhost instance\n"))
    else:
        raise SystemExit(USAGE)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
