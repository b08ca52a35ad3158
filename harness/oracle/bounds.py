"""The constants of the double-double oracle's error analysis (``harness.oracle.fast``'s
module docstring derives them), shared by its NumPy and compiled paths."""

#: relative error of one double-double operation (sum, product, division): above
#: 15 u**2 + 56 u**3 with u = 2**-53 (Joldes, Muller, Popescu 2017)
EPS_OP = 2.0**-100
#: relative error of the double-double exp
EPS_EXP = 2.0**-93
#: relative error of the compiled path's one-table exp (``_kernel._exp_tile_fast``)
EPS_EXP_FAST = 2.0**-91
#: below this (relative to the row maximum) an exponential counts as 0, with error E_TINY
TINY_D = -600.0
E_TINY = 2.7e-261  # > exp(-600) = 2.65e-261
_SPLITTER = 134217729.0  # 2**27 + 1
#: certified values stay far from underflow; every bound also carries _ABS_SLACK, more
#: than all the absolute errors that gradual underflow of intermediates could add
_MIN_OK = 2.0**-900
_ABS_SLACK = 2.0**-1000
_MAX_OK = 2.0**1000
_HALF_MARGIN = 0.5 * (1 - 2.0**-40)
