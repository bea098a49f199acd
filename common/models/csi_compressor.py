"""Neural CSI compressor with a learned entropy model (the paper's Fig. 1 backbone).

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates", Sec. II-B: the RD loss of eq. (9) (:func:`rd_loss`)
with the rate estimated as in eq. (5). The NMSE of eq. (11) is
``common.phy.metrics.nmse_db(..., reduction="mean")``.

Input: the spatial-frequency CSI ``H: complex64 [batch, n_ant, n_sc]`` as real and imaginary
planes ``x: float32 [batch, 2, n_ant, n_sc]``.

- Encoder ``g_a``: conv(k=5, 64 kernels) + ReLU + max-pool(2), conv(k=5, 64) + ReLU +
  max-pool(2), conv(k=5, 2 kernels), linear: latents ``y: [batch, 2, n_ant/4, n_sc/4]``
  (compression ratio 16 in real dimensions).
- Uniform scalar quantization with unit bins (``U(-1/2, 1/2)`` noise in training, rounding
  at inference) and the DeepFactorized density (``common.coding.entropy_models``).
- Decoder ``g_s``: conv(k=5, 64) + ReLU + upsample(2), conv(k=5, 64) + ReLU + upsample(2),
  conv(k=5, 2), linear.

By default (``dense_latent=False``, Fig. 1 as described) the encoder and the decoder have
108,930 weights each at any CSI size, the paper's Table V "EO 109 K / FM 218 K", and one
64 x 64 sample costs 475 MFLOPs, Table V's 475 M. A coded decoder update covers the
decoder's weights plus the DeepFactorized density's 58 per latent channel (109,046 in all).

Two paths with one contract (CompressAI-style): :meth:`CSICompressor.forward` is the
training path (reconstruction, likelihoods, estimated bits); :meth:`CSICompressor.compress`
returns a real range-coded frame and :meth:`CSICompressor.decompress` takes it back.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from common.coding.bitstream import crc32_of_arrays
from common.coding.entropy_models import DeepFactorized, PmfTable
from common.coding.latent_codec import latent_ideal_bits, pack_latents, unpack_latents

__all__ = [
    "CompressorConfig",
    "CSICompressor",
    "csi_to_planes",
    "planes_to_csi",
    "rd_loss",
    "bits_per_dim",
]


@dataclass(frozen=True)
class CompressorConfig:
    """Architecture of the compressor.

    Parameters
    ----------
    n_ant, n_sc : int, default 32, 32
        CSI size (antennas x subcarriers); multiples of 4.
    width : int, default 64
        Kernels of the hidden conv layers.
    latent_channels : int, default 2
        Kernels of the last encoder layer (the latent channels).
    kernel : int, default 5
        Conv kernel size (odd).
    max_batch : int, default 4096
        Most CSI samples one latent stream may carry (the receiver's bound).
    dense_latent : bool, default False
        Close the encoder and open the decoder with a fully connected layer over the
        ``C * H * W`` latents (an option, not the paper's Fig. 1, whose last encoder layer
        is the 2-kernel conv with linear activation and whose decoder is conv layers only).
        It gives every latent a global view. Adds ``L^2 + L`` weights per side,
        ``L = C * H * W``: 16,512 at 32 x 32, 262,656 at 64 x 64, where the coded decoder
        update grows from 108,930 conv weights to 371,586.
    """

    n_ant: int = 32
    n_sc: int = 32
    width: int = 64
    latent_channels: int = 2
    kernel: int = 5
    max_batch: int = 4096
    dense_latent: bool = False

    def __post_init__(self) -> None:
        if self.n_ant <= 0 or self.n_sc <= 0 or self.n_ant % 4 or self.n_sc % 4:
            raise ValueError(f"n_ant and n_sc must be positive multiples of 4, got {self.n_ant} x {self.n_sc}")
        if self.kernel % 2 == 0 or self.kernel <= 0:
            raise ValueError(f"kernel must be a positive odd integer, got {self.kernel}")
        if self.width <= 0 or self.latent_channels <= 0 or self.max_batch <= 0:
            raise ValueError("width, latent_channels and max_batch must be positive")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample's latents."""
        return (self.latent_channels, self.n_ant // 4, self.n_sc // 4)

    @property
    def csi_dims(self) -> int:
        """CSI dimensions the rate is normalised by (``n_ant * n_sc``, complex entries)."""
        return self.n_ant * self.n_sc

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def csi_to_planes(H: torch.Tensor) -> torch.Tensor:
    """``complex64 [batch, n_ant, n_sc]`` -> ``float32 [batch, 2, n_ant, n_sc]`` (real, imag)."""
    if not torch.is_complex(H) or H.dim() != 3:
        raise ValueError(f"expected complex CSI [batch, n_ant, n_sc], got {H.dtype} {tuple(H.shape)}")
    return torch.stack([H.real, H.imag], dim=1).to(torch.float32)


def planes_to_csi(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`csi_to_planes`."""
    if x.dim() != 4 or x.shape[1] != 2:
        raise ValueError(f"expected planes [batch, 2, n_ant, n_sc], got {tuple(x.shape)}")
    return torch.complex(x[:, 0].float(), x[:, 1].float())


def rd_loss(x: torch.Tensor, x_hat: torch.Tensor, bits: torch.Tensor, lmbda: float, csi_dims: int) -> torch.Tensor:
    """eq. (9): ``lambda * MSE + R`` with R in bits per CSI dimension per sample.

    Larger ``lambda`` moves the compressor to higher rates and lower distortion (as in the
    paper; the issue's "D + lambda R" is the same trade-off with lambda inverted).
    """
    mse = (x - x_hat).pow(2).mean()
    rate = bits / (x.shape[0] * csi_dims)
    return lmbda * mse + rate


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class CSICompressor(nn.Module):
    """Encoder, DeepFactorized entropy model and decoder.

    Parameters
    ----------
    cfg : CompressorConfig
    seed : int, default 0
        Seed of the weight initialisation (deterministic).
    """

    def __init__(self, cfg: CompressorConfig | None = None, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg or CompressorConfig()
        c, w, k = self.cfg.latent_channels, self.cfg.width, self.cfg.kernel
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            lat = self.cfg.latent_shape
            L = lat[0] * lat[1] * lat[2]
            dense_in: list[nn.Module] = [nn.Flatten(), nn.Linear(L, L), nn.Unflatten(1, lat)] if self.cfg.dense_latent else []
            dense_out: list[nn.Module] = [nn.Flatten(), nn.Linear(L, L), nn.Unflatten(1, lat)] if self.cfg.dense_latent else []
            self.encoder = nn.Sequential(
                _conv(2, w, k), nn.ReLU(), nn.MaxPool2d(2),
                _conv(w, w, k), nn.ReLU(), nn.MaxPool2d(2),
                _conv(w, c, k), *dense_in,
            )
            self.decoder = nn.Sequential(
                *dense_out,
                _conv(c, w, k), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                _conv(w, w, k), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                _conv(w, 2, k),
            )
            self.entropy = DeepFactorized(c, seed=int(seed))
        self._tables: tuple[int, list[PmfTable]] | None = None

    # ----- parameter groups -----------------------------------------------------------
    def encoder_named(self) -> list[tuple[str, nn.Parameter]]:
        """Encoder weights (device-local, never sent)."""
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]

    def decoder_named(self) -> list[tuple[str, nn.Parameter]]:
        """Decoder weights and the entropy model's density (what a decoder update covers).

        The tracked quantiles are not included: they stay as pre-trained at both ends.
        """
        dens = [(n, p) for n, p in self.entropy.named_parameters() if not n.startswith("quantiles")]
        return [(f"decoder.{n}", p) for n, p in self.decoder.named_parameters()] + [(f"entropy.{n}", p) for n, p in dens]

    def decoder_arrays(self) -> list[np.ndarray]:
        """float32 copies of :meth:`decoder_named`, in order."""
        return [p.detach().cpu().numpy().astype(np.float32).copy() for _, p in self.decoder_named()]

    def encoder_arrays(self) -> list[np.ndarray]:
        """float32 copies of :meth:`encoder_named`, in order."""
        return [p.detach().cpu().numpy().astype(np.float32).copy() for _, p in self.encoder_named()]

    @torch.no_grad()
    def load_decoder_arrays(self, arrays: list[np.ndarray]) -> None:
        """Overwrite the decoder weights with ``arrays`` (shapes checked)."""
        self._load(self.decoder_named(), arrays, "decoder")

    @torch.no_grad()
    def load_encoder_arrays(self, arrays: list[np.ndarray]) -> None:
        """Overwrite the encoder weights with ``arrays`` (shapes checked)."""
        self._load(self.encoder_named(), arrays, "encoder")

    def _load(self, named: list[tuple[str, nn.Parameter]], arrays: list[np.ndarray], what: str) -> None:
        if len(arrays) != len(named):
            raise ValueError(f"{what} has {len(named)} arrays, got {len(arrays)}")
        for (n, p), a in zip(named, arrays):
            if tuple(np.shape(a)) != tuple(p.shape):
                raise ValueError(f"{n}: expected shape {tuple(p.shape)}, got {np.shape(a)}")
        for (_, p), a in zip(named, arrays):
            p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))
        self._tables = None

    def n_decoder_params(self) -> int:
        return sum(p.numel() for _, p in self.decoder_named())

    def decoder_tag(self) -> int:
        """CRC-32 of the decoder state (names the model a stream was coded for)."""
        return self.tag_of(self.decoder_arrays())

    def tag_of(self, decoder_arrays: list[np.ndarray]) -> int:
        """The :meth:`decoder_tag` this model would have with ``decoder_arrays`` loaded."""
        return crc32_of_arrays(list(decoder_arrays) + [self.entropy.quantiles.detach().numpy()])

    @torch.no_grad()
    def scale_latents(self, c: float) -> None:
        """Stretch the latent space by ``c > 0`` without changing the continuous autoencoder.

        The encoder's last layer (linear) is multiplied by ``c`` and the decoder's first
        layer's weights divided by it, so ``decoder(encoder(x))`` is unchanged while the
        unit quantization bins become ``c`` times finer relative to the latents.
        """
        if not c > 0:
            raise ValueError(f"latent scale must be positive, got {c}")
        last = [m for m in self.encoder if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
        first = [m for m in self.decoder if isinstance(m, (nn.Conv2d, nn.Linear))][0]
        last.weight.mul_(c)
        last.bias.mul_(c)
        first.weight.div_(c)
        self._tables = None

    # ----- training path --------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training path.

        Parameters
        ----------
        x : torch.Tensor
            ``float32 [batch, 2, n_ant, n_sc]``.

        Returns
        -------
        dict
            ``x_hat`` (same shape as ``x``), ``y`` (continuous latents ``[batch, C, H, W]``),
            ``likelihoods`` (same shape as ``y``) and ``bits`` (scalar, the model's
            *estimate* ``-sum log2 likelihoods``).
        """
        self._check_input(x)
        y = self.encoder(x)
        y_hat, lik = self.entropy(y)
        x_hat = self.decoder(y_hat)
        bits = -torch.log2(lik).sum()
        return {"x_hat": x_hat, "y": y, "likelihoods": lik, "bits": bits}

    def _check_input(self, x: torch.Tensor) -> None:
        expect = (2, self.cfg.n_ant, self.cfg.n_sc)
        if x.dim() != 4 or tuple(x.shape[1:]) != expect:
            raise ValueError(f"expected input [batch, {expect[0]}, {expect[1]}, {expect[2]}], got {tuple(x.shape)}")

    # ----- bitstream path -------------------------------------------------------------
    def tables(self) -> list[PmfTable]:
        """Coding tables of the current density (cached until weights are loaded)."""
        tag = self.decoder_tag()
        if self._tables is None or self._tables[0] != tag:
            self._tables = (tag, self.entropy.pmf_tables())
        return self._tables[1]

    @torch.no_grad()
    def quantized_latents(self, H: torch.Tensor) -> np.ndarray:
        """``int32 [batch, C, H, W]``: rounded encoder output for CSI ``complex64 [batch, n_ant, n_sc]``."""
        x = csi_to_planes(H)
        self._check_input(x)
        y = torch.round(self.encoder(x))
        if not torch.isfinite(y).all():
            raise ValueError("encoder produced non-finite latents")
        return y.to(torch.int64).numpy().astype(np.int32)

    @torch.no_grad()
    def compress(self, H: torch.Tensor) -> bytes:
        """Real bitstream of CSI ``complex64 [batch, n_ant, n_sc]`` (a framed range-coded stream)."""
        if H.shape[0] > self.cfg.max_batch:
            raise ValueError(f"at most {self.cfg.max_batch} CSI samples per stream, got {H.shape[0]}")
        return pack_latents(self.quantized_latents(H), self.tables(), self.decoder_tag())

    @torch.no_grad()
    def estimated_bits(self, H: torch.Tensor) -> float:
        """The model's estimate of the latent bits for ``H`` (information content under the tables)."""
        return latent_ideal_bits(self.quantized_latents(H), self.tables())

    @torch.no_grad()
    def decompress(self, data: bytes) -> torch.Tensor:
        """Reconstruct CSI ``complex64 [batch, n_ant, n_sc]`` from :meth:`compress` output.

        Raises
        ------
        common.coding.BitstreamError
            Malformed stream, or one coded for another decoder.
        """
        y = unpack_latents(data, self.tables(), self.cfg.latent_shape, self.cfg.max_batch, self.decoder_tag())
        return self.decode_latents(y)

    @torch.no_grad()
    def decode_latents(self, y: np.ndarray) -> torch.Tensor:
        """Decoder on integer latents ``int32 [batch, C, H, W]`` -> ``complex64 [batch, n_ant, n_sc]``."""
        return planes_to_csi(self.decoder(torch.from_numpy(np.asarray(y, dtype=np.float32))))

    # ----- cost -----------------------------------------------------------------------
    def forward_flops(self) -> int:
        """Multiply-adds x 2 of one sample's encoder + decoder pass (conv layers only)."""
        k2 = self.cfg.kernel**2
        a, s, w, c = self.cfg.n_ant, self.cfg.n_sc, self.cfg.width, self.cfg.latent_channels
        hw = a * s
        enc = 2 * k2 * (2 * w * hw + w * w * hw // 4 + w * c * hw // 16)
        dec = 2 * k2 * (c * w * hw // 16 + w * w * hw // 4 + w * 2 * hw)
        L = c * hw // 16
        dense = 2 * 2 * L * L if self.cfg.dense_latent else 0
        return int(enc + dec + dense)

    def train_step_flops(self, batch: int) -> int:
        """Approximate FLOPs of one training step (forward + backward ~ 3 x forward)."""
        return 3 * batch * self.forward_flops()


def bits_per_dim(bits: float, n_samples: int, csi_dims: int) -> float:
    """Bits per CSI dimension: ``bits / (n_samples * n_ant * n_sc)``."""
    return float(bits) / max(1, n_samples * csi_dims) if math.isfinite(bits) else math.inf
