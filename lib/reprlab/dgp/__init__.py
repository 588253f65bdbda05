"""Chapter 5: compositional uncertainty in deep Gaussian processes.

Three variational inference schemes for DGPs ``f_L ∘ … ∘ f_1`` (Ustyuzhaninov, Kazlauskaitė
et al., UAI 2020):

* :class:`DSVI` — factorised inducing points per layer (Salimbeni & Deisenroth 2017, §2);
* :class:`JointlyGaussianDGP` — inducing points jointly Gaussian across layers, with nested
  sampling or analytic marginalisation under a chain factorisation (§4.1);
* :class:`InducingLocationsDGP` — inducing points of one layer are the inducing locations of
  the next (§4.2).

:func:`make_model` / :func:`fit_dgp` / :class:`DeepGPRegressor` build and fit them;
:mod:`reprlab.dgp.experiments` reproduces Table 1 and Figs. 2, 3, 5 and 6.
"""

from reprlab.dgp.conditionals import CholeskyError, conditional, gaussian_kl, stable_cholesky
from reprlab.dgp.dsvi import DSVI, build_layers
from reprlab.dgp.fit import SCHEMES, DeepGPRegressor, fit_dgp, make_model, single_thread
from reprlab.dgp.ipail import InducingLocationsDGP
from reprlab.dgp.joint import JointlyGaussianDGP
from reprlab.dgp.kernels import Periodic, SquaredExponential, make_kernel
from reprlab.dgp.layers import DeepGP, GPLayer

__all__ = [
    "DSVI",
    "SCHEMES",
    "CholeskyError",
    "DeepGP",
    "DeepGPRegressor",
    "GPLayer",
    "InducingLocationsDGP",
    "JointlyGaussianDGP",
    "Periodic",
    "SquaredExponential",
    "build_layers",
    "conditional",
    "fit_dgp",
    "gaussian_kl",
    "make_kernel",
    "make_model",
    "single_thread",
    "stable_cholesky",
]
