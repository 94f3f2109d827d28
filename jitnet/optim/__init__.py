"""Optimizers (SGD, Adam) and learning-rate schedules (StepLR, CosineLR).

Updates run as kernels of the active target (``sgd_update_many``, ``adam_update_many``,
once per parameter group), in place on ``param.data``. Per-parameter buffers live in
``param.state``, so ``model.to(target)`` moves them with the parameters. The semantics
are PyTorch's ``torch.optim.SGD`` / ``torch.optim.Adam``, parameter groups included::

    opt = optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                     {"params": model[-1].parameters(), "weight_decay": 0.0}],
                    lr=0.01, momentum=0.9, weight_decay=5e-4)
    for group in opt.param_groups:       # a hand-written schedule, as in PyTorch
        group["lr"] *= 0.5

Every public call validates all of its input before it changes anything: a rejected
``step()`` or ``load_state_dict()`` leaves parameters, buffers and hyperparameters as
they were (the kernels trust their inputs, and a fused update cannot be undone). A
hyperparameter written into a parameter group (``group["lr"] = 0.01``) or set as an
attribute (``opt.lr = 0.01``, every group) is checked on assignment, as the
constructor checks it.
"""

from .adam import Adam
from .lr_scheduler import CosineLR, StepLR
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Adam", "CosineLR", "Optimizer", "SGD", "StepLR"]
