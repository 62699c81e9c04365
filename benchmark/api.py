"""The interfaces every DisguiseBench plugin implements: data, defenses, attacks, tasks, threat views.

Plugins follow scikit-learn's estimator conventions: ``__init__`` stores keyword arguments
unchanged, validation happens in ``validate``/``fit``, learned or secret state lives in
attributes ending in ``_``, ``get_params()`` reads the ``__init__`` signature, and ``clone()``
returns the unfitted copy. For a defense that copy is exactly what a Kerckhoffs attacker holds:
the algorithm and its hyperparameters, never the key.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Self

import torch
from torch import Tensor, nn

from disguisebench.errors import Name, PluginError  # noqa: F401 (re-exported: plugins import it here)

if TYPE_CHECKING:
    from disguisebench.blocks import BlockLayout


class Capability(Name):
    """What an attack can be granted (docs/design.md, "Threat levels"); each is a field of
    ``ThreatView``. The runner builds a view holding exactly the ones the threat level grants
    and the attack declares. Members are strings: records and plans hold the values."""

    TARGETS = "targets"
    UPLOAD = "upload"
    DEFENSE = "defense"
    MODEL = "model"
    PUBLIC = "public"
    GALLERY = "gallery"
    KNOWN_PAIRS = "known_pairs"
    ORACLE = "oracle"


TARGETS = Capability.TARGETS
UPLOAD = Capability.UPLOAD
DEFENSE = Capability.DEFENSE
MODEL = Capability.MODEL
PUBLIC = Capability.PUBLIC
GALLERY = Capability.GALLERY
KNOWN_PAIRS = Capability.KNOWN_PAIRS
ORACLE = Capability.ORACLE
CAPABILITIES = tuple(Capability)

_LEVEL_1 = frozenset({TARGETS, UPLOAD, DEFENSE, MODEL, PUBLIC, GALLERY})
LEVELS: dict[str, frozenset[Capability]] = {
    "level-1": _LEVEL_1,
    "level-2": _LEVEL_1 | {KNOWN_PAIRS},
    "level-3": _LEVEL_1 | {KNOWN_PAIRS, ORACLE},
}


class Goal(Name):
    """What an attack tries to learn; ``disguisebench.scoring`` turns a prediction into success
    for each. Members are strings: records hold the values."""

    REIDENTIFY = "reidentify"
    RECONSTRUCT = "reconstruct"
    LABEL = "label"
    MEMBERSHIP = "membership"


REIDENTIFY = Goal.REIDENTIFY
RECONSTRUCT = Goal.RECONSTRUCT
LABEL = Goal.LABEL
MEMBERSHIP = Goal.MEMBERSHIP
GOALS = tuple(Goal)
# Whose classes a ``label`` attack predicts (Attack.label_of).
LABEL_OF = ("targets", "gallery")


class NotApplicable(PluginError):
    """An attack cannot apply to this defense: it needs structure the defense does not have (a
    block-wise layout, disguised images of the plaintext's shape). The runner records it as
    not-applicable with the message, like a capability the level does not grant, so it neither
    scores nor marks the entry incomplete. Raise it only for what the defense's public
    hyperparameters or output shape decide, never for a failure of the attack's own code."""


@dataclasses.dataclass(frozen=True)
class Data:
    """A batch of images with labels.

    Args:
        x: float32 tensor (N, C, H, W); in [0, 1] before any defense, any real values after.
        y: (N,) integer labels, (N, K) soft labels, or None where the holder does not know them.
        source: for disguised data, (N, m) indices into the plaintext batch the defense was given:
            the images each output was made from (m > 1 for mixing defenses such as InstaHide,
            -1 pads rows that mix fewer private images). None means output i came from input i.
    """

    x: Tensor
    y: Tensor | None = None
    source: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or self.x.dim() != 4:
            shape = tuple(self.x.shape) if isinstance(self.x, Tensor) else type(self.x).__name__
            raise PluginError(f"Data.x must be a 4-d tensor (N, C, H, W), got {shape}")
        n = self.x.shape[0]
        for name in ("y", "source"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != n:
                raise PluginError(
                    f"Data.{name} has {value.shape[0]} rows but Data.x has {n} images"
                )

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: Tensor | slice) -> Data:
        return Data(
            self.x[index],
            None if self.y is None else self.y[index],
            None if self.source is None else self.source[index],
        )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def sources(self) -> Tensor:
        """(N, m) plaintext indices each image came from (the identity when ``source`` is None)."""
        if self.source is not None:
            return self.source
        return torch.arange(len(self)).unsqueeze(1)

    def hard_labels(self) -> Tensor:
        """(N,) class indices; soft labels give their arg-max."""
        if self.y is None:
            raise PluginError("these images carry no labels")
        return self.y.argmax(1) if self.y.dim() == 2 else self.y

    def without_labels(self) -> Data:
        return Data(self.x, None, self.source)


@dataclasses.dataclass(frozen=True)
class Splits:
    """The owner's private training and test images, and public images of the same distribution."""

    train: Data
    test: Data
    public: Data
    num_classes: int


def device() -> torch.device:
    """Where models train and run: the GPU when one is present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_images(data: Data, *, what: str = "images") -> None:
    """Raise PluginError unless ``data`` holds a non-empty float batch of finite values in [0, 1]."""
    x = data.x
    if len(data) == 0:
        raise PluginError(f"{what}: empty dataset (0 images)")
    if x.dtype != torch.float32:
        raise PluginError(f"{what}: expected float32 pixels in [0, 1], got dtype {x.dtype}")
    # One pass: NaN propagates through min and max, and an infinity is one of them.
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int((~torch.isfinite(x)).sum())
        raise PluginError(f"{what}: {bad} pixel values are NaN or infinite; expected [0, 1]")
    if lo < 0.0 or hi > 1.0:
        raise PluginError(f"{what}: pixel values span [{lo:g}, {hi:g}]; expected [0, 1]")


class Plugin:
    """Hyperparameters as keyword arguments; the registry name; params, clone and spec.

    A subclass that only changes its parent's defaults declares them, ``DEFAULTS = {"epochs":
    15}``, instead of an ``__init__``: it gets its parent's ``__init__`` with those defaults, so
    its signature, ``get_params()`` and ``defaults()`` read as if it had been written out.
    """

    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        changed = cls.__dict__.get("DEFAULTS")
        if changed:
            if "__init__" in cls.__dict__:
                raise TypeError(f"{cls.__qualname__}: declare DEFAULTS or an __init__, not both")
            cls.__init__ = _with_defaults(cls.__init__, changed, cls.__qualname__)

    @classmethod
    def param_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters.values()
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [p.name for p in params if p.name != "self" and p.kind in kinds]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        params = inspect.signature(cls.__init__).parameters
        return {n: params[n].default for n in cls.param_names()}

    def get_params(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.param_names()}

    def clone(self) -> Self:
        """An unfitted copy with the same hyperparameters and none of the ``_`` attributes."""
        return type(self)(**copy.deepcopy(self.get_params()))

    def spec(self) -> dict[str, Any]:
        """The canonical description: registry name and every hyperparameter, defaults spelled out."""
        return {"name": self.name, "params": self.get_params()}

    def label(self) -> str:
        """A short display name: the registry name and the hyperparameters that differ from defaults."""
        defaults = self.defaults()
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k) != v}
        if not changed:
            return self.name
        return self.name + "(" + ", ".join(f"{k}={v}" for k, v in changed.items()) + ")"

    def validate(self) -> None:
        """Raise PluginError naming a bad hyperparameter value and what would be valid."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def summary(cls) -> str:
        """The docstring's first paragraph on one line (a summary may wrap in the source)."""
        doc = inspect.getdoc(cls) or ""
        return " ".join(doc.split("\n\n")[0].split())


def _with_defaults(init: Callable[..., None], changed: dict[str, Any],
                   owner: str) -> Callable[..., None]:
    """``init`` with the defaults of the parameters named in ``changed`` replaced."""
    sig = inspect.signature(init)
    unknown = sorted(set(changed) - set(sig.parameters) - {"self"})
    if unknown:
        raise TypeError(f"{owner}.DEFAULTS names no parameter of __init__: {', '.join(unknown)}")
    sig = sig.replace(parameters=[p.replace(default=changed[p.name]) if p.name in changed else p
                                  for p in sig.parameters.values()])

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        init(*bound.args, **bound.kwargs)

    __init__.__signature__ = sig  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{owner}.__init__"
    return __init__


def check_choice(owner: str, param: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise PluginError(f"{owner}: {param}={value!r} is not one of {', '.join(map(repr, choices))}")


def check_number(owner: str, param: str, value: Any, *, kind: type = float,
                 low: float | None = None, high: float | None = None) -> None:
    """Raise PluginError unless ``value`` is a number of ``kind`` within [low, high]."""
    ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (kind is float and not math.isfinite(value)):
        raise PluginError(f"{owner}: {param}={value!r} must be {'an integer' if kind is int else 'a number'}")
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise PluginError(f"{owner}: {param}={value!r} is outside {span}")


class Defense(Plugin):
    """Disguises images under a secret key drawn in ``fit``.

    Subclasses implement ``_fit`` (draw the key from the generator into ``_`` attributes) and
    ``_transform`` (deterministic given the key).
    """

    # A keyless defense (pixelation, blur) has nothing secret to draw.
    keyless: ClassVar[bool] = False
    # A defense that re-encodes every epoch (InstaHide) asks the training loop for fresh encodings.
    reencodes_per_epoch: ClassVar[bool] = False
    # Whether test inputs are disguised too (InstaHide's published protocol leaves them plain).
    encodes_test: ClassVar[bool] = True
    # Whether an output mixes several images of the batch (InstaHide). The harness cuts every
    # other defense's transform requests into chunks of sizes it draws, so that no defense can
    # tell the owner's batches from an attacker's by their size; a mixing defense gets whole
    # batches.
    mixes_images: ClassVar[bool] = False

    def fit(self, data: Data, *, seed: int, public: Data | None = None) -> Self:
        self.validate()
        check_images(data, what=f"{self.name}.fit")
        self._fit(data, torch.Generator().manual_seed(seed), public)
        self.fitted_ = True
        return self

    def transform(self, data: Data, *, epoch: int | None = None) -> Data:
        """Disguise ``data``. ``epoch=None`` gives everything the owner uploads; a defense that
        re-encodes per epoch returns that epoch's share of it for ``epoch=e`` (others ignore it)."""
        if not getattr(self, "fitted_", False):
            raise PluginError(f"{self.name}: call fit() before transform()")
        check_images(data, what=f"{self.name}.transform")
        return self._transform(data, epoch=epoch)

    def output_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The (C, H, W) of disguised images; defenses that change it override this."""
        return tuple(image_shape)  # type: ignore[return-value]

    def block_layout(self, image_shape: tuple[int, int, int]) -> BlockLayout | None:
        """How a block-wise defense cuts images of ``image_shape`` (C, H, W), computed from its
        hyperparameters: block side, grid, disguised block side, how blocks move
        (``disguisebench.blocks.BlockLayout``). None (the default) for a defense that is not
        block-wise or does not say; attacks then learn the structure by probing the clone."""
        return None

    def test_inputs(self, data: Data) -> Data:
        """What the owner feeds the trained model at test time: the disguised test images, or,
        where ``encodes_test`` is False, the plaintext in the model's input scaling."""
        return self.transform(data) if self.encodes_test else data

    def is_fitted(self) -> bool:
        return bool(getattr(self, "fitted_", False))

    def inverse(self, data: Data) -> Data:
        """The owner's recovery of disguised images with the key (fresh noise stays in them)."""
        if not self.is_fitted():
            raise PluginError(f"{self.name}: call fit() before inverse()")
        return self._inverse(data)

    def secret_state(self) -> dict[str, Any]:
        """The key: every attribute ending in ``_``, for the owner's key file."""
        if not self.is_fitted():
            raise PluginError(f"{self.name}: call fit() before exporting its key")
        return {k: v for k, v in vars(self).items() if k.endswith("_")}

    def load_secret_state(self, state: dict[str, Any]) -> Self:
        """Restore a key exported by ``secret_state`` instead of drawing one in ``fit``."""
        self.validate()
        bad = sorted(k for k in state if not k.endswith("_"))
        if bad:
            raise PluginError(f"{self.name}: secret attributes end with '_'; got {', '.join(bad)}")
        for k, v in state.items():
            setattr(self, k, v)
        self.fitted_ = True
        return self

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        pass

    def _transform(self, data: Data, *, epoch: int | None) -> Data:
        raise NotImplementedError

    def _inverse(self, data: Data) -> Data:
        raise PluginError(f"{self.name}: this defense has no inverse for the owner")


class Attack(Plugin):
    """Tries to learn something about the owner's images from what a threat level grants.

    Subclasses implement ``_run``; ``run`` validates the hyperparameters and calls it, as
    ``Defense.fit`` does for ``_fit``. ``goal`` is a ``Goal``; ``needs`` lists the capabilities
    the attack cannot run without, ``optional`` those it uses when the level grants them (the
    level-3 oracle, say). ``run`` returns predictions only; the scorer judges them against a
    truth the attack never sees.

    For the ``label`` goal, ``label_of`` says whose classes the attack predicts: the disguised
    ``"targets"`` (one class per target; the cloud holds their labels, so this scores chance 1
    and advantage 0) or the plaintext ``"gallery"`` images (one per gallery image; model-misuse
    attacks that feed plaintext to the owner's model, scored against a classifier trained on the
    public data alone, see benchmark.baselines).

    ``_run`` returns the prediction, or an :class:`Outcome` of the prediction and diagnostics
    (name -> finite number: an entropy, a fraction of key positions recovered) that the runner
    stores beside the scores as ``attack.<name>``; ``run`` always returns an ``Outcome``.

    ``budget`` names the hyperparameters that are the attack's compute budget (training epochs,
    optimisation steps): a plan's ``compute`` multiplies them, rounding integers to at least 1.
    """

    goal: ClassVar[Goal | str] = ""
    needs: ClassVar[frozenset[Capability]] = frozenset()
    optional: ClassVar[frozenset[Capability]] = frozenset()
    label_of: ClassVar[str] = "targets"
    budget: ClassVar[tuple[str, ...]] = ()

    def run(self, view: ThreatView, *, seed: int) -> Outcome:
        """The prediction for ``view`` and its diagnostics: the hyperparameters are validated,
        then ``_run`` runs."""
        self.validate()
        return Outcome.of(self, self._run(view, seed=seed))

    def _run(self, view: ThreatView, *, seed: int) -> Tensor | Outcome:
        """What an attack implements: a prediction from what ``view`` grants (with diagnostics,
        an ``Outcome``), randomness drawn only from ``seed``."""
        raise NotImplementedError


MAX_DIAGNOSTICS = 64


class Outcome(NamedTuple):
    """What an attack returns: its prediction and its diagnostics (name -> finite number)."""

    prediction: Tensor
    diagnostics: dict[str, float]

    @classmethod
    def of(cls, attack: Attack, value: Any) -> Outcome:
        """``value`` (what ``_run`` or an overridden ``run`` returned) checked as an outcome:
        a tensor, or a tensor and a mapping of finite numbers. Diagnostics left in the
        attribute ``report_`` (the contract before outcomes) are read when none came back."""
        who = attack.name or type(attack).__name__
        if isinstance(value, tuple) and len(value) == 2:
            prediction, diagnostics = value
        else:
            prediction, diagnostics = value, getattr(attack, "report_", None)
        if not isinstance(prediction, Tensor):
            raise PluginError(f"{who}.run returned {type(prediction).__name__}, "
                              "not a tensor (or an Outcome of a tensor and diagnostics)")
        if diagnostics is None:
            diagnostics = {}
        if not isinstance(diagnostics, dict):
            raise PluginError(f"{who}: diagnostics are {type(diagnostics).__name__}, "
                              "not a dict of name -> number")
        if len(diagnostics) > MAX_DIAGNOSTICS:
            raise PluginError(f"{who}: {len(diagnostics)} diagnostics; at most "
                              f"{MAX_DIAGNOSTICS} are stored with a record")
        checked = {}
        for key, number in diagnostics.items():
            if not (isinstance(key, str) and 0 < len(key) <= 64):
                raise PluginError(f"{who}: diagnostic name {key!r} is not a string of 1 to 64 "
                                  "characters")
            try:
                checked[key] = float(number)
            except (TypeError, ValueError):
                checked[key] = math.nan
            if not math.isfinite(checked[key]):
                raise PluginError(f"{who}: diagnostic {key!r} = {number!r} is not a "
                                  "finite number")
        return cls(prediction, checked)


class Task(Plugin):
    """A dataset, a model architecture and a training recipe."""

    def load(self, *, seed: int) -> Splits:
        raise NotImplementedError

    def build_model(self, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise NotImplementedError

    def train(self, data: Data, *, seed: int, num_classes: int,
              reencode: Callable[[int], Data] | None = None,
              progress: bool = False) -> nn.Module:
        raise NotImplementedError

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """Class probabilities (N, K) of ``model`` on ``x``."""
        raise NotImplementedError

    def accuracy(self, model: nn.Module, data: Data) -> float:
        probs = self.predict(model, data.x)
        return float((probs.argmax(1) == data.hard_labels()).float().mean())


@dataclasses.dataclass(frozen=True)
class ThreatView:
    """What one attack sees at one threat level; a capability not granted is None.

    Args:
        level: the threat level's name.
        task: the task (dataset name, architecture and training recipe are public knowledge).
        num_classes: the number of classes.
        targets: disguised training images the cloud holds; their labels are withheld when the
            attack's goal is to infer labels.
        upload: every disguised training image the cloud holds (the owner's whole upload, all T
            encodings per image for a mixing defense), of which the targets are rows; an attack
            that needs statistics of the disguised set, or every encoding sharing a private image
            with a target, reads it here. Labels are withheld as for the targets; which plaintext
            images made each row (``Data.source``) never is shown.
        defense: a keyless clone of the owner's defense (algorithm and hyperparameters).
        model: the model the cloud trained on the disguised training set, in eval mode.
        public: plaintext images from the same distribution, with labels.
        gallery: plaintext candidates (N, C, H, W) for re-identification, shuffled; the images
            to label for a ``label`` attack with ``label_of = "gallery"``.
        known_pairs: (plaintext, disguised) pairs of owner training images, disjoint from targets.
        oracle: disguises any plaintext the attacker chooses under the owner's key.
        queries: the oracle's budget, in images over all requests (None: unlimited); the harness
            refuses a request beyond it with a PluginError, and the attack keeps what it got.
        candidates: for the ``membership`` goal, plaintext images to score for having been in the
            owner's training set (half were, half were not, shuffled).
    """

    level: str
    task: Task
    num_classes: int
    targets: Data | None = None
    upload: Data | None = None
    defense: Defense | None = None
    model: nn.Module | None = None
    public: Data | None = None
    gallery: Tensor | None = None
    known_pairs: tuple[Data, Data] | None = None
    oracle: Callable[[Data], Data] | None = None
    candidates: Tensor | None = None
    queries: int | None = None

    def require(self, capability: Capability | str) -> Any:
        value = getattr(self, capability)
        if value is None:
            raise PluginError(f"capability {capability!r} was not granted at {self.level}")
        return value

    def granted(self) -> frozenset[Capability]:
        return frozenset(c for c in CAPABILITIES if getattr(self, c) is not None)
