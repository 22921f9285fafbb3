"""The ctfhost challenge model: a CTFd challenge (polymorphic on Challenges) plus what ctfhost runs.

CTFd 3.8 keeps dynamic scoring (``function``, ``initial``, ``decay``,
``minimum``) on the Challenges table itself, so a ctfhost challenge scores
statically or dynamically exactly like a standard one.
"""

from CTFd.models import Challenges, db


class CtfhostChallenge(Challenges):
    __tablename__ = "ctfhost_challenge"
    __mapper_args__ = {"polymorphic_identity": "ctfhost"}

    id = db.Column(db.Integer, db.ForeignKey("challenges.id", ondelete="CASCADE"), primary_key=True)
    # the ctfhost challenge id, made once from the name and id (slugs.challenge_slug)
    slug = db.Column(db.String(63), unique=True, index=True)
    image = db.Column(db.String(500))
    port = db.Column(db.Integer)
    # http: a web page behind forward-auth; tcp: TLS with SNI on ctfhost's shared TLS port
    protocol = db.Column(db.String(8), default="http")
    runtime = db.Column(db.String(64), default="docker")
    cpu_count = db.Column(db.Integer, default=1)
    memory_mb = db.Column(db.Integer, default=512)
    ttl_seconds = db.Column(db.Integer, nullable=True)
    max_renewals = db.Column(db.Integer, nullable=True)
    flag_template = db.Column(db.String(256), nullable=True)
    extra_config = db.Column(db.Text, default="{}")
