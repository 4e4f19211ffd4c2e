"""Reviews and reputation: ask every customer, hear the unhappy ones first.

No review gating. cxm asks every eligible customer (eligibility is the
cool-down, the lifetime cap, consent and the guard delay, never a score), and
every request and every answer offers the public review links. The private
feedback path sits beside the public one, never instead of it; a low score
alerts staff for service recovery and never hides the public links.

Importing this package registers the ``reviews`` event hook and the
``review_request`` step kind (``cxm_cli.features`` imports it on every
database open).
"""

from cxm_cli.reviews import hooks, step  # noqa: F401  (registers on import)
