"""InstaHide: mix each private image with k-1 others, then flip every pixel's sign at random."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from disguisebench.api import Data, Defense, PluginError, check_choice, check_number
from disguisebench.registry import register
from disguisebench.defenses._blocks import content_generator, draw_secret

# Rejection sampling of the coefficients stops after this many rounds (the settings validate()
# accepts are met by a good share of draws, so the cap is only reached for near-infeasible ones).
_MAX_REDRAWS = 10_000


def random_signs(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Independent uniform ±1 (float32) of the given shape, unpacked from 32-bit random words:
    one draw per 32 signs, since drawing each sign alone costs several times more."""
    count = math.prod(shape)
    words = torch.randint(0, 2**32, ((count + 31) // 32, 1), generator=gen)
    octets = ((words >> torch.arange(0, 32, 8)) & 255).to(torch.uint8).view(-1, 1)
    bits = (octets >> torch.arange(8, dtype=torch.uint8)) & 1
    return bits.view(-1)[:count].to(torch.float32).mul_(-2).add_(1).view(shape)


@register("instahide")
class InstaHide(Defense):
    """Mix each private image with k-1 others under random weights, then flip pixel signs at random.

    Each pixel and channel of the mix is multiplied by a random sign; the model trains on soft
    labels of the private images.

    Secret: a one-time key per encoding (the partners, the coefficients and the sign mask), drawn
    afresh for each of the T encodings of an image. Targets recovery and re-identification of the
    private images by the cloud. Huang, Song, Li, Arora, "InstaHide: Instance-hiding Schemes for
    Private Distributed Learning", ICML 2020; official code github.com/Hazelsuko07/InstaHide.
    Pixels are centred before mixing, so that the signs hide them: standardised per channel with
    the mean and standard deviation of the images given to ``fit`` (the official training code
    normalises each dataset so), or mapped to [-1, 1] (2x - 1). Inside-dataset mode mixes k
    private images; cross-dataset mode mixes 2 private images with k-2 public ones (the official
    code's ``--pair``; the public images are the ``public`` set given to ``fit``, centred with
    their own statistics and drawn with replacement) and redraws until the two private
    coefficients sum to at least ``lower``. Coefficients are |N(0, 1)| draws normalised to sum 1
    and redrawn while any exceeds ``upper``. Labels are the coefficient-weighted one-hot labels of
    the private images only (in cross mode they sum to the private share, as in the official
    code).
    The owner uploads T = encodings_per_image rounds. In each round, encoding i has private image
    i first and its partners from one random permutation of the batch per private slot (a partner
    may be the image itself, as in the official code), so every private image leads exactly T
    encodings and fills p*T private slots in all (p = k inside, 2 cross).
    ``transform(data)`` returns all T*N encodings, what the cloud holds (``Data.source`` lists the
    private images in each, -1 for public slots); ``transform(data, epoch=e)`` returns round
    e mod T, which training uses in epoch e (the paper re-encodes every epoch).
    Test images are not encoded in the published protocol: the model is evaluated on plaintext
    test images centred as the private images were (``test_inputs``).

    Args:
        k: number of images mixed into one encoding.
        mode: "inside" (all k from the private set) or "cross" (2 private, k-2 public).
        upper: upper bound on any coefficient (c1 in the paper).
        lower: lower bound on the two private coefficients' sum in cross mode (c2 in the paper).
        encodings_per_image: T, encodings of each private image the cloud receives in total.
        num_classes: classes of the soft labels (None: the largest label seen in fit, plus one).
        centring: "standardize" (per-channel mean and standard deviation measured in fit) or
            "symmetric" (2x - 1).
    """

    reencodes_per_epoch = True
    mixes_images = True
    encodes_test = False

    def __init__(self, k: int = 4, mode: str = "inside", upper: float = 0.65, lower: float = 0.3,
                 encodings_per_image: int = 10, num_classes: int | None = None,
                 centring: str = "standardize") -> None:
        self.k = k
        self.mode = mode
        self.upper = upper
        self.lower = lower
        self.encodings_per_image = encodings_per_image
        self.num_classes = num_classes
        self.centring = centring

    def validate(self) -> None:
        check_choice(self.name, "mode", self.mode, ("inside", "cross"))
        check_choice(self.name, "centring", self.centring, ("standardize", "symmetric"))
        check_number(self.name, "k", self.k, kind=int, low=3 if self.mode == "cross" else 1)
        check_number(self.name, "upper", self.upper, low=0, high=1)
        if self.k > 1 and self.upper * self.k <= 1:
            raise PluginError(f"{self.name}: upper={self.upper!r} must exceed 1/k = "
                              f"{1 / self.k:.4g} so that k coefficients summing to 1 can all stay "
                              "below it")
        check_number(self.name, "lower", self.lower, low=0, high=1)
        if self.mode == "cross" and self.lower >= min(1.0, 2 * self.upper):
            raise PluginError(f"{self.name}: lower={self.lower!r} must stay below min(1, 2 * upper)"
                              f" = {min(1.0, 2 * self.upper):.4g}")
        check_number(self.name, "encodings_per_image", self.encodings_per_image, kind=int, low=1)
        if self.num_classes is not None:
            check_number(self.name, "num_classes", self.num_classes, kind=int, low=1)

    @property
    def private_slots(self) -> int:
        return 2 if self.mode == "cross" else self.k

    def _fit(self, data: Data, rng: torch.Generator, public: Data | None) -> None:
        self.image_shape_ = data.image_shape
        self.shift_, self.scale_ = self._centring(data.x)
        if self.num_classes is not None:
            self.num_classes_ = self.num_classes
        elif data.y is not None:
            self.num_classes_ = data.y.shape[1] if data.y.dim() == 2 else int(data.y.max()) + 1
        else:
            self.num_classes_ = None
        if self.mode == "cross":
            if public is None or len(public) == 0:
                raise PluginError(f"{self.name}: mode='cross' mixes in public images; "
                                  "pass them as fit(data, seed=..., public=...)")
            if public.image_shape != data.image_shape:
                raise PluginError(f"{self.name}: public images have shape {public.image_shape}, "
                                  f"private ones {data.image_shape}")
            shift, scale = self._centring(public.x)
            self.public_ = (public.x - shift) / scale
        self.secret_ = draw_secret(rng)

    def _centring(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(1, C, 1, 1) shift and scale that centre images like ``x``."""
        c = x.shape[1]
        if self.centring == "symmetric":
            return torch.full((1, c, 1, 1), 0.5), torch.full((1, c, 1, 1), 0.5)
        mean = x.mean(dim=(0, 2, 3)).view(1, c, 1, 1)
        std = x.std(dim=(0, 2, 3), correction=0).clamp_min(1e-6).view(1, c, 1, 1)
        return mean, std

    def test_inputs(self, data: Data) -> Data:
        """Plaintext test images centred as the private images are before mixing (no mixing, no
        signs: the published protocol does not encode test images)."""
        if not self.is_fitted():
            raise PluginError(f"{self.name}: call fit() before test_inputs()")
        return Data((data.x - self.shift_) / self.scale_, data.y)

    def _coefficients(self, n: int, gen: torch.Generator) -> Tensor:
        def draw(count: int) -> Tensor:
            lam = torch.randn(count, self.k, generator=gen).abs()
            return lam / lam.sum(1, keepdim=True)

        def bad(lam: Tensor) -> Tensor:
            out = lam.max(1).values > self.upper if self.k > 1 else \
                torch.zeros(len(lam), dtype=torch.bool)
            if self.mode == "cross":
                out |= lam[:, :2].sum(1) < self.lower
            return out

        lam = draw(n)
        for _ in range(_MAX_REDRAWS):
            redo = bad(lam)
            if not redo.any():
                return lam
            lam[redo] = draw(int(redo.sum()))
        raise PluginError(f"{self.name}: could not draw coefficients within upper={self.upper} "
                          f"and lower={self.lower}; loosen them")

    def _labels(self, y: Tensor | None) -> Tensor | None:
        if y is None:
            return None
        if y.dim() == 2:
            return y.float()
        k = self.num_classes_
        if k is None or int(y.max()) >= k or int(y.min()) < 0:
            raise PluginError(f"{self.name}: labels span [{int(y.min())}, {int(y.max())}] but the "
                              f"defense was fitted for {k} classes; set num_classes")
        return F.one_hot(y.long(), k).float()

    def _round(self, x: Tensor, onehot: Tensor | None, gen: torch.Generator) -> Data:
        """One encoding of every image of the batch (image i first in encoding i)."""
        n = len(x)
        lam = self._coefficients(n, gen)
        source = torch.full((n, self.k), -1, dtype=torch.long)
        source[:, 0] = torch.arange(n)
        for j in range(1, self.private_slots):
            source[:, j] = torch.randperm(n, generator=gen)
        weight = lam.view(n, self.k, 1, 1, 1)
        mixed = weight[:, 0] * x
        y = None if onehot is None else lam[:, :1] * onehot
        for j in range(1, self.k):
            if j < self.private_slots:
                partner = x[source[:, j]]
                if y is not None:
                    y = y + lam[:, j:j + 1] * onehot[source[:, j]]
            else:
                partner = self.public_[torch.randint(0, len(self.public_), (n,), generator=gen)]
            mixed.addcmul_(weight[:, j], partner)
        return Data(mixed.mul_(random_signs(tuple(mixed.shape), gen)), y, source)

    def _transform(self, data: Data, *, epoch: int | None) -> Data:
        if data.image_shape != self.image_shape_:
            raise PluginError(f"{self.name}: fitted on images of shape {self.image_shape_}, "
                              f"got {data.image_shape}")
        x = (data.x - self.shift_) / self.scale_
        onehot = self._labels(data.y)
        # One seed per round from the key and the batch: epoch e's round is the same rows of the
        # full upload, whether asked for alone or with the others.
        gen = content_generator(self.secret_, data.x)
        seeds = torch.randint(0, 2**62, (self.encodings_per_image,), generator=gen).tolist()
        rounds = range(self.encodings_per_image) if epoch is None else \
            [epoch % self.encodings_per_image]
        parts = [self._round(x, onehot, torch.Generator().manual_seed(seeds[r])) for r in rounds]
        if len(parts) == 1:
            return parts[0]
        return Data(torch.cat([p.x for p in parts]),
                    None if onehot is None else torch.cat([p.y for p in parts]),
                    torch.cat([p.source for p in parts]))
