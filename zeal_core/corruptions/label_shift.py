"""``label_shift``: the sample's class mix changes (prior shift); its images stay as they are.

Shares start from the pool's own mix ``q`` over the classes the model knows (severity 0 is that mix):

=========================  ================================================================================
step                       target shares at severity s (then renormalised to sum to 1)
=========================  ================================================================================
``label_shift:s``          a seeded random prior ``p ~ Dirichlet(a(s) * K * q)`` (``K`` known classes):
                           ``1 / a(s)`` is 0, 0.1, 0.32, 1, 3.2, 10 at levels 0-5 (linear in between),
                           so ``a`` = 10, 3.2, 1, 0.32, 0.1 at 1-5 (the 10 / 1 / 0.1 of label-shift
                           benchmarks at 1, 3, 5); a new prior for every seed
``label_shift[boost=A/B]``  the named classes' weight times ``2^s`` (x2 at 1, x8 at 3, x32 at 5): one of ten
                           balanced classes goes from 10 % to 18 %, 47 %, 78 %
``label_shift[drop=A/B]``   the named classes' weight times ``1 - s/5``: a share ``s/5`` of their images is
                           knocked out (Failing Loudly's knock-out of 10 / 50 / 100 % is s = 0.5 / 2.5 / 5)
``label_shift[keep=A/B]``   every other class's weight times ``1 - s/5``: at 5 only the named classes remain
=========================  ================================================================================

Boosting or keeping a class the model does not know is refused (that is ``unseen_classes``); dropping one is
allowed and changes nothing (the sampler never draws it).
"""

from __future__ import annotations

import numpy as np

from zeal_core.corruptions._ops import level_params
from zeal_core.corruptions.class_mix import MixContext, register_class_mix
from zeal_core.errors import ConfigError

BOOST_BASE = 2.0  # boost: weight times BOOST_BASE ** severity
KNOCKOUT_SEVERITY = 5.0  # drop / keep: weight times 1 - severity / KNOCKOUT_SEVERITY (0 at level 5)
# random prior: 1 / concentration per class, levels 0-5 (0 = infinitely concentrated = the pool's mix)
INVERSE_CONCENTRATION = ((0.0,), (0.1,), (10 ** -0.5,), (1.0,), (10 ** 0.5,), (10.0,))

MODES = (
    ("boost", "over-sample the named classes: weight x 2^severity"),
    ("drop", "under-sample the named classes: a share severity/5 knocked out (all of them at 5)"),
    ("keep", "under-sample every other class: a share severity/5 knocked out (only the named at 5)"),
)


def concentration(severity: float) -> float:
    """Dirichlet concentration per class of the random prior at ``severity`` (inf at 0)."""
    (inverse,) = level_params(INVERSE_CONCENTRATION, severity)
    return np.inf if inverse == 0 else 1.0 / inverse


def _random_prior(context: MixContext, known_shares: np.ndarray) -> np.ndarray:
    """A Dirichlet draw centred on the known classes' pool mix, computed in log space.

    Gamma(a) = Gamma(a + 1) * U^(1/a) for U uniform on (0, 1): in logs this stays exact for concentrations
    so small that the plain gamma draws would all underflow to 0.
    """
    support = np.flatnonzero(known_shares > 0)
    alpha = concentration(context.severity) * support.size * known_shares[support]
    logs = np.log(context.rng.gamma(alpha + 1.0)) + np.log1p(-context.rng.uniform(size=alpha.size)) / alpha
    weights = np.exp(logs - logs.max())
    shares = np.zeros_like(known_shares)
    shares[support] = weights / weights.sum()
    return shares


@register_class_mix("changed class mix (prior shift): classes over- or under-sampled, or a random prior",
                    default="a seeded random class prior, the more uneven the higher the severity",
                    modes=MODES)
def label_shift(context: MixContext) -> np.ndarray:
    known_shares = np.where(context.known, context.pool_shares, 0.0)
    known_shares = known_shares / known_shares.sum()
    if context.mode is None:
        return _random_prior(context, known_shares)
    named = np.zeros(len(known_shares), dtype=bool)
    named[context.chosen] = True
    if context.mode in ("boost", "keep") and not context.known[named].all():
        unseen = [context.class_names[index] for index in np.flatnonzero(named & ~context.known)]
        raise ConfigError(f"label_shift[{context.mode}=...]: the model was not trained on {unseen}; "
                          "use unseen_classes to bring in classes the model does not know")
    if context.mode == "boost":
        weights = np.where(named, BOOST_BASE ** context.severity, 1.0)
    else:
        kept = 1.0 - context.severity / KNOCKOUT_SEVERITY
        weights = np.where(named == (context.mode == "drop"), kept, 1.0)
    shares = known_shares * weights
    if shares.sum() <= 0:
        raise ConfigError(f"label_shift[{context.mode}=...]:{context.severity:g} leaves no class to draw "
                          "from: knock out fewer classes or lower the severity")
    return shares
