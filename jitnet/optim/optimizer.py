"""The base of jitnet's optimizers: parameter groups, the checks every public call
runs before it changes anything, and the state of a checkpoint."""

from collections.abc import Mapping

import numpy as np

from .._checks import check_int, check_real
from ..nn.module import Module, Parameter, like, zero_grads
from ..targets import is_device_array, to_numpy

#: What an optimizer takes as ``params``, for the messages that reject something else.
_PARAMS_EXPECTED = "an iterable of Parameters (e.g. model.parameters())"

#: An item of ``model.named_parameters()``, which an optimizer takes too (PyTorch 2).
_NAMED = "(name, Parameter) pair"

#: torch.optim's rule for names, in the messages that enforce it.
_ALL_OR_NONE = ("the parameters of an optimizer are all with names or all without, as in "
                "torch.optim")

#: PyTorch's words for a parameter in two groups, kept so that its users recognise it.
_IN_TWO_GROUPS = "some parameters appear in more than one parameter group"


#: ``check_real``'s condition for the hyperparameters that may be 0 but not below.
_AT_LEAST_0 = (">= 0", lambda v: v >= 0)


def _hyperparameter(name):
    """The attribute ``name`` of an optimizer: the value its parameter groups share.

    Reading it with groups whose values differ is a ValueError that points to
    ``param_groups`` (PyTorch has no ``opt.lr``; answering with one group's value
    would let ``opt.lr *= 0.5`` flatten the groups to one rate without a word).
    Assigning it sets every group, checked as ``SGD(..., lr=0.01)`` would be (with
    each group's other hyperparameters as they are: a cross-check such as nesterov's
    ``momentum > 0`` holds too). A rejected value is a TypeError or ValueError naming
    ``name`` and leaves every group as it was.
    """

    def get(self):
        groups = self.param_groups
        value = groups[0][name]
        if any(group[name] != value for group in groups[1:]):
            values = ", ".join(repr(group[name]) for group in groups)
            raise ValueError(
                f"{type(self).__name__}.{name} is ambiguous: its {len(groups)} parameter "
                f"groups have {name} {values}; read opt.param_groups[i][{name!r}]")
        return value

    def set(self, value):
        self._assign(name, [value] * len(self.param_groups))

    return property(get, set, doc=f"``{name}`` of every parameter group; setting it checks "
                                  "it as the constructor does.")


def _is_off(value, off):
    """Whether ``value`` equals ``off`` (a feature of ``torch.optim`` left off: 0, False)."""
    if isinstance(value, str):
        return False
    try:
        return bool(value == off)
    except (TypeError, ValueError):  # an array has no single truth value
        return False


def _check_keys(owner, state, expected, source):
    """Raise unless ``state`` is a mapping with exactly the keys ``expected``.

    ``source`` names what ``state_dict()`` should have made it (``"SGD"``), so that a
    state of another optimizer or schedule is told apart from a damaged one.
    """
    if not isinstance(state, Mapping):
        raise TypeError(
            f"{owner} expected a dict from {source}.state_dict(), got {type(state).__name__}"
        )
    missing = [key for key in expected if key not in state]
    unexpected = sorted(str(key) for key in state if key not in expected)
    if missing or unexpected:
        raise ValueError(
            f"{owner} expected a {source}.state_dict() with the keys {list(expected)}, got "
            f"the keys {sorted(str(key) for key in state)} (missing {missing}, unexpected "
            f"{unexpected}: the state of another optimizer or schedule?)"
        )


def _check_params(owner, params, in_group=False):
    """``(parameters, names)`` of ``params``, or a TypeError / ValueError saying what
    was wrong; ``names`` is None unless ``params`` holds ``(name, Parameter)`` pairs.

    Rejects a Module or a single Parameter (not an iterable of them), a set (whose
    order, which the optimizer's state follows, changes between runs), items that are
    neither Parameters nor ``(str, Parameter)`` pairs, pairs mixed with Parameters
    (all with names or all without, as ``torch.optim``; a ValueError), an empty
    list and a parameter listed twice (which would take two updates per step;
    ``torch.optim`` warns that this will become an error). ``in_group``: the
    ``"params"`` of a parameter group, which may be a single Parameter or empty, as
    in PyTorch (an empty one has no names, as in PyTorch).
    """
    subject = "'params' to be " if in_group else ""
    if in_group and isinstance(params, Parameter):
        return [params], None
    if isinstance(params, (Module, Parameter)):
        hint = "pass model.parameters()" if isinstance(params, Module) else "wrap it in a list"
        raise TypeError(
            f"{owner} expected {subject}{_PARAMS_EXPECTED}, got a {type(params).__name__}; "
            f"{hint}"
        )
    if isinstance(params, (set, frozenset)):
        # torch.optim refuses a set in a group, for this reason, and lets one through
        # as the whole params (list() of it): the same hazard, so refused here too
        raise TypeError(
            f"{owner} expected {subject}an ordered collection of Parameters (a list, or "
            f"model.parameters()), got a {type(params).__name__}, whose order changes "
            f"between runs, and the optimizer's state follows the order; use a list"
        )
    try:
        params = list(params)
    except TypeError:
        raise TypeError(
            f"{owner} expected {subject}{_PARAMS_EXPECTED}, got {type(params).__name__}"
        ) from None
    if not params and not in_group:
        raise ValueError(f"{owner} got an empty parameter list")
    # all with names or all without, as the first (torch.optim's rule)
    named = bool(params) and isinstance(params[0], tuple)
    parameters, names, first_index = [], [] if named else None, {}
    for i, item in enumerate(params):
        if isinstance(item, tuple):
            p = _check_pair(owner, subject, i, item)
            if not named:
                raise ValueError(
                    f"{owner} expected {subject}all Parameters without names, as at index 0, "
                    f"got a {_NAMED} at index {i}; {_ALL_OR_NONE}"
                )
            names.append(item[0])
        elif named:
            if isinstance(item, Parameter):
                raise ValueError(
                    f"{owner} expected {subject}all {_NAMED}s, as at index 0, got a Parameter "
                    f"without a name at index {i}; {_ALL_OR_NONE}"
                )
            raise TypeError(f"{owner} expected {subject}{_NAMED}s (e.g. "
                            f"model.named_parameters()), got {type(item).__name__} at index {i}")
        elif isinstance(item, Parameter):
            p = item
        else:
            either = f" or of {_NAMED}s (model.named_parameters())" if i == 0 else ""
            raise TypeError(
                f"{owner} expected {subject}{_PARAMS_EXPECTED}{either}, got "
                f"{type(item).__name__} at index {i}"
            )
        if id(p) in first_index:
            raise ValueError(
                f"{owner} got {_describe(i, p, names and names[i])} twice, at index "
                f"{first_index[id(p)]} and {i}; list each parameter once"
            )
        first_index[id(p)] = i
        parameters.append(p)
    return parameters, names


def _check_pair(owner, subject, index, item):
    """The Parameter of ``item`` (``params[index]``), a ``(str, Parameter)`` pair, or the
    TypeError that says how it is not one."""
    if len(item) != 2:
        raise TypeError(f"{owner} expected {subject}{_NAMED}s, got a tuple of {len(item)} "
                        f"items at index {index}")
    name, p = item
    if not (isinstance(name, str) and isinstance(p, Parameter)):
        raise TypeError(f"{owner} expected {subject}{_NAMED}s, got ({type(name).__name__}, "
                        f"{type(p).__name__}) at index {index}")
    return p


def _check_names(owner, names, count):
    """``names`` (a group's ``"param_names"``) as a list of ``count`` str, or the
    TypeError / ValueError that refuses it."""
    expected = f"expected 'param_names' to be a list of {count} str (one per parameter)"
    if isinstance(names, (str, bytes, Mapping)) or not hasattr(names, "__iter__"):
        raise TypeError(f"{owner} {expected}, got {type(names).__name__}")
    names = list(names)
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"{owner} {expected}, got {type(name).__name__} at index {i}")
    if len(names) != count:
        raise ValueError(f"{owner} {expected}, got a list of {len(names)}")
    return names


def _split_groups(owner, params):
    """``params`` as a list of parameter groups, as ``torch.optim`` reads it: an iterable
    of Parameters is one group; an iterable of dicts is a group each (checked later)."""
    if isinstance(params, (Module, Parameter, set, frozenset)):
        _check_params(owner, params)  # raises, with the hint for each
    try:
        items = list(params)
    except TypeError:
        raise TypeError(f"{owner} expected {_PARAMS_EXPECTED} or of parameter groups (dicts "
                        f"with the key 'params'), got {type(params).__name__}") from None
    if not (items and isinstance(items[0], Mapping)):
        _check_params(owner, items)  # the messages of a list, not of a group's "params"
        return [{"params": items}]
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TypeError(f"{owner} expected every item of params to be a parameter group "
                            f"(a dict with the key 'params'), as the first is, got "
                            f"{type(item).__name__} at index {i}")
    return items


def _describe(index, p, name=None):
    """``parameter 1 ('bias')``: how messages name a parameter of an optimizer (by
    ``name``, the one it was given with, or else its own)."""
    name = name or p.name
    return f"parameter {index}" + (f" ({name!r})" if name else "")


def _check_update(owner, index, p, buffers):
    """Raise unless parameter ``p`` (``index`` in its optimizer) can take an update.

    Parameters
    ----------
    owner : str
        Who checks (``"SGD.step"``).
    index : int
        Position of ``p`` in the optimizer's parameters, for the message.
    p : Parameter
        Its ``data`` must be a writeable C-contiguous floating-point array (updated in
        place through a flat view); its ``grad`` an array of the same shape and dtype
        (``np.ndarray``, or on the cuda target also a device array); the ``buffers``
        it holds in ``state`` the same shape and dtype as ``data``.
    buffers : tuple of str
        Keys of ``p.state`` that hold arrays like ``data``.

    Notes
    -----
    Only attributes are compared (no copy, nothing read from a device): this runs
    for every parameter on every step.
    """
    data, grad = p.data, p.grad
    # the messages are put together only when one is raised (formatting a dtype is
    # what cost most: 33 -> 15 us a step for the reference net's 8 parameters)
    def where():
        return f"{owner}: {_describe(index, p)}"

    on_device = is_device_array(data)
    if not (on_device or isinstance(data, np.ndarray)):
        raise TypeError(f"{where()} expected .data to be an array, got {type(data).__name__}")
    shape, dtype = tuple(data.shape), np.dtype(data.dtype)
    if dtype.kind != "f":
        raise TypeError(f"{where()} expected floating-point .data, got dtype {dtype}")
    # the cpu kernels update a reshape(-1) of data, which is a copy (so the update
    # would be lost) unless data is C-contiguous
    if on_device:
        in_place = data.is_c_contiguous()
    else:
        in_place = data.flags.c_contiguous and data.flags.writeable
    if not in_place:
        raise ValueError(
            f"{where()} expected .data to be a writeable C-contiguous array (it is updated "
            f"in place), got strides {data.strides} for shape {shape}"
        )

    def expected():
        return f"of shape {shape} and dtype {dtype}"

    # a host gradient of a device parameter is copied over by the cuda kernels; a
    # device gradient of a host parameter has nowhere to go
    if not (isinstance(grad, np.ndarray) or (on_device and is_device_array(grad))):
        kind = "an np.ndarray or a device array" if on_device else "an np.ndarray"
        raise TypeError(f"{where()} expected .grad to be {kind} {expected()}, "
                        f"got {type(grad).__name__}")
    if tuple(grad.shape) != shape or np.dtype(grad.dtype) != dtype:
        error = ValueError if tuple(grad.shape) != shape else TypeError
        raise error(f"{where()} expected .grad {expected()}, "
                    f"got shape {tuple(grad.shape)} and dtype {grad.dtype}")
    for key in buffers:
        buffer = p.state.get(key)
        if buffer is not None and (tuple(buffer.shape) != shape or buffer.dtype != dtype):
            raise ValueError(
                f"{where()} expected its state {key!r} {expected()}, got shape "
                f"{tuple(buffer.shape)} and dtype {buffer.dtype} (was .data replaced?); "
                "clear param.state or load a matching state_dict"
            )


def _checked_params(owner, current, changes):
    """``{"params": [...]}``, with ``"param_names"`` for a group with names, of a
    parameter group that holds ``current`` (``{}`` for a group being made) after
    ``changes``, or the TypeError / ValueError (from ``owner``) that refuses them.

    The names come from ``(name, Parameter)`` pairs in ``"params"`` or from a list
    ``"param_names"`` beside Parameters (as a group of another optimizer holds them),
    not both. A group made with names keeps them (new ``"params"`` come with theirs) and
    one made without takes none: its optimizer's groups are all with names or all
    without (checked by ``Optimizer._add_group`` as the groups are made).
    """
    if "params" in changes:
        params, names = _check_params(owner, changes["params"], in_group=True)
    else:
        params, names = current["params"], None
    if "param_names" in changes:
        if names is not None:
            raise ValueError(f"{owner} expected the names of its parameters once, got "
                             f"{_NAMED}s in 'params' and 'param_names' too; give one")
        names = _check_names(owner, changes["param_names"], len(params))
    if "params" in current:  # a write into a group of an optimizer
        if "param_names" in current and names is None:
            if params:
                raise ValueError(
                    f"{owner} expected 'params' to be {_NAMED}s (e.g. "
                    f"model.named_parameters()), or 'param_names' beside them, as the group "
                    f"has names, got Parameters without names; {_ALL_OR_NONE}")
            names = []
        elif "param_names" not in current and names is not None:
            got = f"{_NAMED}s" if "param_names" not in changes else "'param_names'"
            raise ValueError(
                f"{owner} expected Parameters without names, as the group has none, got "
                f"{got}; {_ALL_OR_NONE}")
    return {"params": params} if names is None else {"params": params, "param_names": names}


def _with_params(checked, changes):
    """``changes`` with ``"params"`` and ``"param_names"`` of ``checked`` (where
    ``"params"`` stands, or first)."""
    items = dict(checked) if "params" not in changes else {}
    for key, value in changes.items():
        if key == "params":
            items.update(checked)
        elif key != "param_names":
            items[key] = value
    return items


class _ParamGroup(dict):
    """One of ``opt.param_groups``: ``{"params": [...], "lr": ..., <hyperparameters>}``.

    A dict, as in PyTorch, whose writes are checked as the constructor checks a group:
    ``group["lr"] = -1`` (or ``update``, ``setdefault``, ``|=``) raises a TypeError or
    ValueError naming the group and the key (``SGD.param_groups[1] expected lr to be a
    finite number >= 0, got -1``) and leaves the group as it was; a value that passes
    is kept as the constructor keeps it (a float; ``betas`` a tuple). ``"params"``
    (``"param_names"`` too, in a group made with names) and the hyperparameters
    cannot be deleted. A group made with names keeps them: new ``"params"`` come as
    ``(name, Parameter)`` pairs or with ``"param_names"`` in the same ``update``, and
    new ``"param_names"`` are one str per parameter; a group made without takes none.
    Other keys (a name, notes of a hand-written schedule) are the caller's and are
    not checked.

    Checked on assignment rather than at ``step()``: the error comes from the line
    that made the mistake, as ``opt.lr = -1`` always has, and a group never holds a
    value that ``state_dict()``, the attributes (``opt.lr``) or a schedule would read
    unchecked. The price is an order for the one cross-check (nesterov needs
    momentum > 0: turn nesterov off first, or change both in one ``update``). What a
    dict cannot see, a ``"params"`` list changed in place, ``step()`` checks.
    """

    __slots__ = ("_kind", "_index")

    def __init__(self, kind, index, items):
        """A group of optimizer class ``kind`` at ``index``, of ``items`` already checked."""
        super().__init__(items)
        self._kind, self._index = kind, index

    def __reduce__(self):
        # copy and pickle rebuild a dict subclass item by item, through __setitem__,
        # before its slots are set: rebuild it whole
        return (type(self), (self._kind, self._index, dict(self)))

    def _checked(self, changes, owner=None):
        """``changes`` as this group would keep them, or the error that refuses them."""
        owner = owner or f"{self._kind.__name__}.param_groups[{self._index}]"
        return self._kind._checked_group(owner, self, changes)

    def _check_removable(self, key):
        why = "step() reads it"
        if key == "param_names" and key in self:
            why = "a group made with names keeps them, as its optimizer's other groups do"
        elif not (key == "params" or key in self._kind._names()):
            return
        raise ValueError(f"{self._kind.__name__}.param_groups[{self._index}] cannot do "
                         f"without {key!r} ({why}); assign a new value instead")

    def __setitem__(self, key, value):
        dict.update(self, self._checked({key: value}))

    def update(self, other=(), /, **kwargs):
        dict.update(self, self._checked(dict(other, **kwargs)))

    def __ior__(self, other):
        self.update(other)
        return self

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __delitem__(self, key):
        self._check_removable(key)
        dict.__delitem__(self, key)

    def pop(self, key, *default):
        if key in self:
            self._check_removable(key)
        return dict.pop(self, key, *default)

    def popitem(self):
        if self:
            self._check_removable(next(reversed(self)))
        return dict.popitem(self)

    def clear(self):
        self._check_removable("params")


class Optimizer:
    """Base: holds the parameter groups, and the learning rate ``lr`` schedules change.

    Parameters
    ----------
    params : iterable of Parameter, of (name, Parameter) pairs, or of dict
        Each parameter once (``model.parameters()``), or with its name
        (``model.named_parameters()``, as PyTorch 2), or parameter groups as in
        PyTorch: dicts with the key ``"params"`` (an iterable of Parameters or of
        pairs, or one Parameter) and any hyperparameters that differ from the
        constructor's. As in PyTorch, the parameters of a group are all with names
        or all without, and so are the groups (an empty group has none); a
        ValueError says which is which otherwise.
    lr : float
        ``>= 0``.
    **hyperparameters
        The subclass's others. All are checked by its ``_checked``.

    Attributes
    ----------
    param_groups : list of dict
        ``{"params": [Parameter, ...], "lr": ..., <hyperparameters>}`` per group, as
        PyTorch's, with ``"param_names": [str, ...]`` after ``"params"`` where the
        parameters came with names; a write to a group is checked (see
        :class:`_ParamGroup`).
    defaults : dict
        The constructor's hyperparameters: what a group that does not name one takes.
    params : list of Parameter
        Every group's parameters, in order (read only): the order of ``state_dict()``.
    lr, <hyperparameters>
        The value every group has; see :func:`_hyperparameter`.

    Notes
    -----
    A subclass names its hyperparameters besides ``lr`` in ``_hyperparameters``, each
    an attribute made by :func:`_hyperparameter`, the arrays it keeps in
    ``param.state`` in ``_buffers``, its counters there in ``_counters``, and the
    hyperparameters of its ``torch.optim`` twin it lacks in ``_unsupported`` (with
    the value that turns each off, which a group may name).
    """

    lr = _hyperparameter("lr")
    _hyperparameters = ()
    _buffers = ()
    _counters = ()
    _unsupported = {}

    @classmethod
    def _names(cls):
        """The hyperparameters every group holds (and ``state_dict()`` saves)."""
        return ("lr", *cls._hyperparameters)

    @property
    def _own_keys(self):
        """This optimizer's keys of ``param.state`` (another one over the same
        parameters keeps its own there too)."""
        return (*self._counters, *self._buffers)

    def __init__(self, params, lr, **hyperparameters):
        owner = type(self).__name__
        groups = _split_groups(owner, params)
        self.defaults = self._checked(owner, lr=lr, **hyperparameters)
        self.param_groups = []
        for group in groups:
            self._add_group(f"{owner}.param_groups[{len(self.param_groups)}]", group)
        if not any(group["params"] for group in self.param_groups):
            raise ValueError(f"{owner} got an empty parameter list")

    @property
    def params(self):
        """Every parameter group's parameters, in order (a new list)."""
        return [p for group in self.param_groups for p in group["params"]]

    @staticmethod
    def _checked(owner, lr):
        """The hyperparameters as the optimizer keeps them, after the constructor's checks."""
        return {"lr": check_real(owner, "lr", lr, *_AT_LEAST_0)}

    @classmethod
    def _checked_group(cls, owner, current, changes):
        """``changes`` to a parameter group that holds ``current``, as the group keeps
        them, or the TypeError / ValueError (from ``owner``) that refuses them.

        The hyperparameters go through the constructor's ``_checked`` together, so
        that a cross-check sees the group as it will be.
        """
        checked = dict(changes)
        if "params" in changes or "param_names" in changes:
            checked = _with_params(_checked_params(owner, current, changes), changes)
        for key, off in cls._unsupported.items():
            if key in changes and not _is_off(changes[key], off):
                raise ValueError(f"{owner} got {key}={changes[key]!r}, which jitnet's "
                                 f"{cls.__name__} does not implement (only {key}={off!r}, "
                                 "PyTorch's default)")
        names = cls._names()
        if any(name in changes for name in names):
            group = {**current, **changes}
            checked.update(cls._checked(owner, **{name: group[name] for name in names}))
        return checked

    def add_param_group(self, param_group):
        """Add a parameter group, as PyTorch's ``Optimizer.add_param_group``.

        Parameters
        ----------
        param_group : dict
            ``{"params": iterable of Parameter (or one) or of (name, Parameter)
            pairs, <hyperparameters>}``; a hyperparameter it does not name takes the
            constructor's (``defaults``). With names if the groups there are have
            them, else without (as PyTorch).

        Raises
        ------
        TypeError, ValueError
            For a bad hyperparameter or parameter list, and (ValueError) for a
            parameter that is in a group already or a group with names among groups
            without (or the reverse); nothing is added then.
        """
        self._add_group(f"{type(self).__name__}.add_param_group", param_group)

    def _add_group(self, owner, group):
        """Check ``group`` (against the groups there are, too) and append it."""
        if not isinstance(group, Mapping):
            raise TypeError(f"{owner} expected a parameter group (a dict with the key "
                            f"'params'), got {type(group).__name__}")
        if "params" not in group:
            raise ValueError(f"{owner} expected a parameter group with the key 'params', got "
                             f"the keys {sorted(str(key) for key in group)}")
        items = self._checked_group(owner, {}, {"params": None, **self.defaults, **group})
        if self.param_groups and (
                ("param_names" in items) != ("param_names" in self.param_groups[0])):
            kinds = ["without names (Parameters)", f"with names ({_NAMED}s)"]
            named = "param_names" in items
            got = kinds[named] if named or items["params"] else (
                "without names (an empty one has none, as in torch.optim; add "
                "'param_names': [])")
            raise ValueError(f"{owner} expected a parameter group {kinds[not named]}, as "
                             f"param_groups[0] is, got one {got}; {_ALL_OR_NONE}")
        known = {id(p): i for i, other in enumerate(self.param_groups) for p in other["params"]}
        for j, p in enumerate(items["params"]):
            if id(p) in known:
                raise ValueError(f"{owner} got {_describe(j, p)}, which param_groups"
                                 f"[{known[id(p)]}] holds already: {_IN_TWO_GROUPS}")
        self.param_groups.append(_ParamGroup(type(self), len(self.param_groups), items))

    def _assign(self, name, values):
        """Set hyperparameter ``name`` of each group to its item of ``values``, all or none
        (the attributes' setters and the schedules)."""
        groups = self.param_groups
        if len(values) != len(groups):
            raise ValueError(f"{type(self).__name__} got {len(values)} values of {name} for "
                             f"{len(groups)} parameter groups")
        # one group answers as the optimizer (``SGD expected lr ...``), as it always has
        owner = type(self).__name__ if len(groups) == 1 else None
        checked = [group._checked({name: value}, owner) for group, value in zip(groups, values)]
        for group, items in zip(groups, checked):
            dict.update(group, items)

    def zero_grad(self, set_to_none=True):
        """Reset the gradient of every parameter, as PyTorch's ``Optimizer.zero_grad``.

        Parameters
        ----------
        set_to_none : bool, default True
            Forget each gradient (``grad = None``). With False, each gradient array
            is filled with zeros in place, where it lives (host or device); a
            parameter without a gradient keeps ``grad = None``, and one whose
            gradient stays zero is still updated by :meth:`step` (weight decay,
            momentum), as in PyTorch.

        Raises
        ------
        TypeError, ValueError
            As :meth:`jitnet.nn.Module.zero_grad`; every gradient is checked before
            any is filled.
        """
        params = self.params
        zero_grads(f"{type(self).__name__}.zero_grad", params, set_to_none,
                   lambda i: _describe(i, params[i]))

    def step(self):
        raise NotImplementedError(f"{type(self).__name__}.step: the base Optimizer holds "
                                  "parameter groups and updates nothing; use a subclass "
                                  "(SGD, Adam)")

    def _to_update(self):
        """``[(group, its parameters that have a gradient)]``, once every parameter of
        every group has passed :func:`_check_update` (so that a bad gradient leaves all
        parameters as they are)."""
        owner = f"{type(self).__name__}.step"
        todo, seen, index = [], set(), 0
        for g, group in enumerate(self.param_groups):
            if not isinstance(group, _ParamGroup):  # a dict appended to the list by hand
                raise TypeError(f"{owner} expected param_groups[{g}] to be a group the "
                                f"optimizer made (add one with add_param_group), got "
                                f"{type(group).__name__}")
            params = []
            # a "params" list changed in place is the one write a group cannot check
            for p in group["params"]:
                if not isinstance(p, Parameter):
                    raise TypeError(f"{owner} expected param_groups[{g}]['params'] to hold "
                                    f"Parameters, got {type(p).__name__}")
                if id(p) in seen:
                    raise ValueError(f"{owner}: {_describe(index, p)} is listed twice (in "
                                     f"param_groups[{g}]); {_IN_TWO_GROUPS} or twice in one")
                seen.add(id(p))
                if p.grad is not None:
                    _check_update(owner, index, p, self._buffers)
                    params.append(p)
                index += 1
            todo.append((group, params))
        return todo

    def state_dict(self):
        """Hyperparameters and per-parameter state as host arrays / ints (for checkpoints).

        Returns
        -------
        dict
            With one parameter group, ``{"lr": float, "state": [dict per parameter, in
            order], <hyperparameters>}``, as before parameter groups existed (so older
            checkpoints and newer ones of one group are alike). With several,
            ``{"state": [...], "param_groups": [{"params": [indices into state], "lr":
            ..., <hyperparameters>}, ...]}``, as PyTorch's ``param_groups``. Every
            array is an ``np.ndarray``; a parameter's dict holds this optimizer's keys
            of ``param.state`` (none before its first update). Keys of a group other
            than its hyperparameters are not saved, ``"param_names"`` neither: names
            belong to the parameters an optimizer was made with, as the parameters
            do, so a state saves and loads alike with names or without (and
            :meth:`load_state_dict` leaves each group's names as they are).
        """
        own = self._own_keys
        state = []
        for p in self.params:
            entry = {}
            for key, value in p.state.items():
                if key not in own:
                    continue
                if isinstance(value, np.ndarray) or is_device_array(value):
                    entry[key] = np.array(to_numpy(value))
                else:
                    entry[key] = value
            state.append(entry)
        names = self._names()
        if len(self.param_groups) == 1:
            group = self.param_groups[0]
            return {"lr": group["lr"], "state": state,
                    **{name: group[name] for name in names[1:]}}
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({"params": list(range(start, start + n)),
                           **{name: group[name] for name in names}})
            start += n
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned; arrays go where each parameter lives.

        Parameters
        ----------
        state : dict
            ``state_dict()`` of an optimizer of this class over parameters of the same
            shapes, in groups of the same sizes: every hyperparameter (checked as by
            the constructor) and, per parameter, no state or all of it, arrays of the
            parameter's shape (cast to its dtype). It replaces this optimizer's keys of
            each ``param.state`` and the hyperparameters of each group (its other keys
            stay). A state without ``"param_groups"`` (saved with one group, or before
            groups existed) loads into an optimizer of one group.

        Raises
        ------
        TypeError, ValueError
            Naming the key, group or parameter at fault; a ValueError for a state of
            other groups. Everything is checked before anything is set, so a rejected
            state changes nothing.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        params = self.params
        entries = state.get("state") if isinstance(state, Mapping) else None
        # a state of another model is the likeliest mistake: say so before the keys
        if isinstance(entries, (list, tuple)) and len(entries) != len(params):
            raise ValueError(
                f"{owner} expected state for {len(params)} parameters, got {len(entries)}"
            )
        if isinstance(state, Mapping) and "param_groups" in state:
            _check_keys(owner, state, ("state", "param_groups"), type(self).__name__)
            groups = self._loaded_groups(owner, state["param_groups"])
        else:
            names = self._names()
            _check_keys(owner, state, (*names, "state"), type(self).__name__)
            if len(self.param_groups) != 1:
                raise ValueError(
                    f"{owner} expected the state of an optimizer of {self._group_sizes()}, "
                    f"got one of one parameter group (the state of another optimizer?)")
            groups = [self._checked(owner, **{name: state[name] for name in names})]
        if not isinstance(entries, (list, tuple)):
            raise TypeError(f"{owner} expected 'state' to be a list of dicts, one per "
                            f"parameter, got {type(entries).__name__}")
        param_states = [self._loaded(owner, i, p, entry)
                        for i, (p, entry) in enumerate(zip(params, entries))]
        # all at once, not key by key: each assignment checks the others as they are
        # (nesterov=True with the old momentum=0 would be refused)
        for group, values in zip(self.param_groups, groups):
            dict.update(group, values)
        own = self._own_keys
        for p, param_state in zip(params, param_states):
            p.state = {key: value for key, value in p.state.items() if key not in own}
            p.state.update(param_state)

    def _group_sizes(self):
        """``2 parameter groups (of 3 and 2 parameters)``, for messages."""
        sizes = [len(group["params"]) for group in self.param_groups]
        return (f"{len(sizes)} parameter groups (of "
                f"{', '.join(map(str, sizes[:-1]))} and {sizes[-1]} parameters)"
                if len(sizes) > 1 else "one parameter group")

    def _loaded_groups(self, owner, saved):
        """The hyperparameters of each group from ``saved`` (a state's
        ``"param_groups"``), checked, after checking it groups the parameters as this
        optimizer does."""
        if not isinstance(saved, (list, tuple)):
            raise TypeError(f"{owner} expected 'param_groups' to be a list of dicts, one per "
                            f"parameter group, got {type(saved).__name__}")
        if len(saved) != len(self.param_groups):
            raise ValueError(f"{owner} expected the state of an optimizer of "
                             f"{self._group_sizes()}, got one of {len(saved)} parameter groups")
        names = self._names()
        groups, start = [], 0
        for i, (group, mine) in enumerate(zip(saved, self.param_groups)):
            where = f"{owner}: param_groups[{i}]"
            if not isinstance(group, Mapping):
                raise TypeError(f"{where} expected a dict, got {type(group).__name__}")
            keys = ("params", *names)
            if set(group) != set(keys):
                raise ValueError(f"{where} expected the keys {list(keys)}, got "
                                 f"{sorted(str(key) for key in group)} (the state of another "
                                 "optimizer?)")
            expected = list(range(start, start + len(mine["params"])))
            start = expected[-1] + 1 if expected else start
            if not isinstance(group["params"], (list, tuple)) or list(group["params"]) != expected:
                raise ValueError(f"{where} expected 'params' to be the parameters {expected} "
                                 f"(this optimizer's grouping), got {group['params']!r}")
            groups.append(self._checked(where, **{name: group[name] for name in names}))
        return groups

    def _loaded(self, owner, index, p, entry):
        """Parameter ``p``'s state from ``entry`` (new arrays where ``p`` lives), checked."""
        where = f"{owner}: state of {_describe(index, p)}"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} expected a dict, got {type(entry).__name__}")
        keys = self._own_keys
        # a partial state would fail in step(), where the missing buffer is looked up
        if entry and set(entry) != set(keys):
            raise ValueError(f"{where} expected no keys or the keys {list(keys)}, "
                             f"got {sorted(str(key) for key in entry)}")
        loaded = {}
        for key in self._counters:
            if key in entry:
                loaded[key] = check_int(where, key, entry[key], 0)
        for key in self._buffers:
            if key not in entry:
                continue
            value = entry[key]
            if not (isinstance(value, np.ndarray) or is_device_array(value)):
                raise TypeError(f"{where} expected {key} to be an np.ndarray of shape "
                                f"{p.shape}, got {type(value).__name__}")
            if tuple(value.shape) != p.shape:
                raise ValueError(f"{where}: {key} expected shape {p.shape}, "
                                 f"got {tuple(value.shape)}")
            if np.dtype(value.dtype).kind != "f":
                raise TypeError(f"{where}: {key} expected a floating-point dtype, "
                                f"got {value.dtype}")
            # astype copies: the optimizer updates its buffers in place, and must not
            # write into the arrays of the dict it was given
            loaded[key] = like(p.data, to_numpy(value).astype(p.dtype))
        return loaded
