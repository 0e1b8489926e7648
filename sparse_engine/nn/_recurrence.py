"""Former home of the recurrence, kept so that old imports work: the Function, ``Config`` and
``recurrence()`` are in :mod:`sparse_engine.nn.recurrence`, the cells (gate layouts, fused op
pairs, composed steps) in :mod:`sparse_engine.nn.cell_table`.

The global ``USE_FUSED`` is gone: the fused/composed choice is the modules' ``fused=`` setting
(``Config.fused``).
"""
from ..constants import GATES  # noqa: F401
from .cell_table import (  # noqa: F401
    ctrnn_step as _ctrnn_fwd,
    ctrnn_step_backward as _ctrnn_bwd,
    gru_step as _gru_fwd,
    gru_step_backward as _gru_bwd,
    has_fused_kernels as _has_fused_kernels,
    lstm_step as _lstm_fwd,
    lstm_step_backward as _lstm_bwd,
    mm as _mm,
    mm_t as _mm_t,
    rnn_step as _rnn_fwd,
    rnn_step_backward as _rnn_bwd,
    wgrad as _wgrad,
)
from .recurrence import (  # noqa: F401
    Config,
    RecordsGradFactors,
    Recurrence,
    check_input_dtype,
    fused_ok as _fused_ok,
    recurrence,
)
