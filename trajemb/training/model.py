"""The trajectory encoder of arXiv 2506.02571: a small Transformer over (x, y) steps -> unit vector.

input projection (2 -> d_model) -> input dropout -> sinusoidal positional encoding ->
``nn.TransformerEncoder`` (post-norm, GELU, feed-forward ``ff_mult * d_model``) -> masked mean pool
over valid steps -> head (d_model -> d_model/2 -> D) -> L2 normalisation (the paper's; ``normalize``
False keeps the head's output, for losses that use the embedding's length, ``trajemb.training.soft_neighbor_loss``).

``linear_base="pca"`` (issue 20) adds a linear map of the whole flattened window, (T * 2) -> D, to the
head's output: the trainer sets it to the window's PCA projection fitted on the training windows
(``trajemb.training.linear_base``) and the head's last layer starts at zero, so training starts exactly where
PCA to D is (within 0.5 % of the raw-space oracle's minADE on agent-frame windows) and the Transformer
learns a correction. Missing steps (``valid`` False) enter the linear map as ``complete_steps`` fills
them, linearly interpolated (constant-velocity at the ends), as the PCA baseline reads perturbed windows
(``trajemb.data.perturb.fill_missing``); the Transformer masks them.

Legend: B batch, T steps, D embedding dim. Inputs are agent-frame metres divided by
``input_scale_m`` so that activations stay O(1) whatever the window length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trajemb.core.errors import ConfigError
from trajemb.core.fields import Bounds, check_fields, param
from trajemb.core.validate import check_int

#: Bounds on encoder sizes: far above the paper's base model (width 1024, 4 layers, 34 M parameters),
#: far below what would exhaust memory. A ``config.json`` is read from a file, and its values size
#: allocations before any weight is compared, so a crafted one must not ask for 64 GB.
MAX_EMBEDDING_DIM = 4096
MAX_D_MODEL = 16384
MAX_LAYERS = 256
MAX_FF_MULT = 64
MAX_STEPS = 100_000
MAX_PARAMETERS = 2_000_000_000
#: The positional table is (max_steps, d_model) float32, built whatever the window length.
MAX_POSITIONAL_CELLS = 200_000_000


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild an encoder; saved as ``config.json`` beside its weights."""

    embedding_dim: int = param(16, help="D, the embedding's dimension", low=2, high=MAX_EMBEDDING_DIM)
    d_model: int = param(128, help="width of the Transformer (even)", low=4, high=MAX_D_MODEL)
    num_layers: int = param(1, help="Transformer layers", low=1, high=MAX_LAYERS)
    num_heads: int = param(4, help="attention heads (divide d_model)", low=1, high=MAX_D_MODEL)
    ff_mult: int = param(2, help="feed-forward width / d_model", low=1, high=MAX_FF_MULT)
    dropout: float = param(
        0.1, help="dropout inside the Transformer", bounds=Bounds(0.0, 1.0, high_open=True)
    )
    input_dropout: float = param(
        0.0, help="dropout after the input projection", bounds=Bounds(0.0, 1.0, high_open=True)
    )
    input_scale_m: float = param(
        10.0, help="agent-frame metres per input unit", bounds=Bounds(0.0, 1e9, low_open=True)
    )
    max_steps: int = param(512, help="longest window the positional table covers", low=2, high=MAX_STEPS)
    normalize: bool = param(
        True, help="unit-length embeddings, as the paper's (off: for loss soft_neighbors)"
    )
    # A linear map of the flattened window added to the Transformer's output (module docstring); it
    # reads windows of exactly ``window_steps`` steps.
    linear_base: Literal["none", "pca"] = param(
        "none", help="pca: a linear base (PCA of the training windows) under a zero-initialised correction"
    )
    window_steps: int = param(
        0, help="steps of the windows a linear base reads (set by the trainer)", cli=False
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.d_model % 2:
            raise ConfigError(f"d_model must be an even number >= 4, got {self.d_model}", fields=("d_model",))
        check_int("num_heads", self.num_heads, 1, self.d_model)
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"d_model {self.d_model} must be divisible by num_heads {self.num_heads}",
                fields=("d_model", "num_heads"),
            )
        if not isinstance(self.normalize, bool):
            raise ConfigError(
                f"normalize must be true or false, got {self.normalize!r:.40}", fields=("normalize",)
            )
        if self.linear_base == "none":
            if self.window_steps != 0:
                raise ConfigError(
                    f"window_steps {self.window_steps!r:.40} needs linear_base pca", fields=("window_steps",)
                )
        else:
            # 0: not known yet (the trainer sets the steps of its table before building the encoder).
            if self.window_steps != 0:
                check_int("window_steps", self.window_steps, 2, self.max_steps)
            if self.normalize:
                raise ConfigError(
                    "linear_base pca keeps PCA's distances, which unit length would distort: "
                    "set normalize off",
                    fields=("normalize",),
                )
        if self.max_steps * self.d_model > MAX_POSITIONAL_CELLS:
            raise ConfigError(
                f"max_steps {self.max_steps} x d_model {self.d_model} positional table is too large "
                f"(more than {MAX_POSITIONAL_CELLS} values)"
            )
        if self.num_parameters() > MAX_PARAMETERS:
            raise ConfigError(
                f"an encoder of width {self.d_model}, {self.num_layers} layers and ff_mult {self.ff_mult} "
                f"has about {self.num_parameters():.3g} parameters, more than {MAX_PARAMETERS:.0e}"
            )

    def num_parameters(self) -> int:
        """Parameter count of ``TrajectoryEncoder(self)``, computed without building it."""
        d, ff = self.d_model, self.ff_mult * self.d_model
        attention = 4 * d * d + 4 * d  # in-projection (q, k, v) and out-projection, with biases
        feed_forward = 2 * d * ff + ff + d
        layer = attention + feed_forward + 4 * d  # two LayerNorms
        head = d * (d // 2) + d // 2 + 2 * (d // 2) + (d // 2) * self.embedding_dim + self.embedding_dim
        base = (2 * self.window_steps + 1) * self.embedding_dim if self.linear_base != "none" else 0
        return 3 * d + self.num_layers * layer + head + base

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; the linear base's only where there is one, so that the
        ``config.json`` of an encoder without it is byte for byte what earlier releases wrote."""
        out = asdict(self)
        if self.linear_base == "none":
            del out["linear_base"], out["window_steps"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Rebuild from ``to_dict()`` output; every value is checked as in ``__init__``.

        Raises:
            ConfigError: not a dict, unknown keys, or values out of range.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"encoder config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown encoder config key(s) {sorted(map(str, unknown))[:5]}")
        return cls(**data)


def complete_steps(xy: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, T, 2) windows with (B, T) ``valid`` -> (B, T, 2) complete windows: missing steps linearly
    interpolated in time between observed ones, before the first (after the last) observed step
    extrapolated along the line of the first (last) two, as ``trajemb.data.perturb.fill_missing`` does in
    numpy; observed steps are returned as they are. A window with a single observed step stays there."""
    B, T, _ = xy.shape
    steps = torch.arange(T, device=xy.device).expand(B, T)
    prev = torch.cummax(torch.where(valid, steps, -1), dim=1).values  # last observed at or before
    after = torch.where(valid, steps, T).flip(1)
    nxt = torch.cummin(after, dim=1).values.flip(1)  # first observed at or after
    first, last = nxt[:, :1], prev[:, -1:]
    second = torch.gather(nxt, 1, (first + 1).clamp(max=T - 1))
    before_last = torch.gather(prev, 1, (last - 1).clamp(min=0))
    lo = torch.where(prev < 0, first, torch.where(nxt >= T, before_last, prev)).clamp(0, T - 1)
    hi = torch.where(prev < 0, second, torch.where(nxt >= T, last, nxt)).clamp(0, T - 1)
    a = torch.gather(xy, 1, lo[..., None].expand(B, T, 2))
    b = torch.gather(xy, 1, hi[..., None].expand(B, T, 2))
    span = torch.where(hi == lo, 1, hi - lo).to(xy.dtype)
    w = ((steps - lo).to(xy.dtype) / span)[..., None]
    return torch.where(valid[..., None], xy, a + (b - a) * w)


def sinusoidal_encoding(num_steps: int, d_model: int) -> torch.Tensor:
    """(T, d_model) sine/cosine positional encoding (Vaswani et al.)."""
    position = torch.arange(num_steps, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(num_steps, d_model)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


class TrajectoryEncoder(nn.Module):
    """(B, T, 2) agent-frame trajectories -> (B, D) unit-norm embeddings."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.input_projection = nn.Linear(2, d)
        self.input_dropout = nn.Dropout(config.input_dropout)
        self.register_buffer("positional", sinusoidal_encoding(config.max_steps, d), persistent=False)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.num_heads,
            dim_feedforward=config.ff_mult * d,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.num_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(
            nn.Linear(d, d // 2),
            nn.GELU(),
            nn.LayerNorm(d // 2),
            nn.Dropout(config.dropout),
            nn.Linear(d // 2, config.embedding_dim),
        )
        # Built after every other layer, so that an encoder without it draws the same initial weights
        # from the same seed as before it existed.
        self.linear_base: nn.Linear | None = None
        if config.linear_base != "none":
            if config.window_steps < 2:
                raise ConfigError("an encoder with a linear base needs window_steps (the steps it reads)")
            self.linear_base = nn.Linear(2 * config.window_steps, config.embedding_dim)
            with torch.no_grad():
                self.linear_base.weight.zero_()
                self.linear_base.bias.zero_()
                # The correction starts at zero: a fresh model is its linear base alone.
                out_layer = self.head[-1]
                assert isinstance(out_layer, nn.Linear)
                out_layer.weight.zero_()
                out_layer.bias.zero_()

    def forward(self, xy_agent: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Embed trajectories.

        Args:
            xy_agent: (B, T, 2) positions in metres, agent frame.
            valid: (B, T) True where a step is present; None = all present. Padded steps are ignored
                by attention and pooling.

        Returns:
            (B, D) embeddings (float32), L2-normalised unless ``config.normalize`` is False.
        """
        T = xy_agent.shape[1]
        if T > self.config.max_steps:
            raise ConfigError(f"window of {T} steps exceeds the encoder's max_steps {self.config.max_steps}")
        x = self.input_projection(xy_agent / self.config.input_scale_m)
        x = self.input_dropout(x) + self.positional[:T]  # type: ignore[index]
        pad = None if valid is None else ~valid
        h = self.encoder(x, src_key_padding_mask=pad)  # (B, T, d)
        if valid is None:
            pooled = h.mean(dim=1)
        else:
            w = valid.to(h.dtype)[..., None]
            pooled = (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return self._output(self.head(pooled).float(), xy_agent, valid)

    def base_features(self, xy_agent: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) the linear base's output for (B, T, 2) windows (missing steps completed first), in
        float32 whatever autocast says: PCA's small differences must not round away in bf16."""
        assert self.linear_base is not None
        T = xy_agent.shape[1]
        if T != self.config.window_steps:
            raise ConfigError(
                f"this encoder's linear base reads windows of {self.config.window_steps} steps, got {T}; "
                "prepare the table with the steps it was trained on"
            )
        xy = xy_agent.float()
        if valid is not None:
            xy = complete_steps(xy, valid)
        with torch.autocast(device_type=xy.device.type, enabled=False):
            out: torch.Tensor = self.linear_base(xy.reshape(len(xy), -1))
        return out

    def _output(self, z: torch.Tensor, xy_agent: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        if self.linear_base is not None:
            z = z + self.base_features(xy_agent, valid)
        return F.normalize(z, dim=-1) if self.config.normalize else z

    def inference_constants(self, num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What ``forward_inference`` derives from the weights for windows of ``num_steps`` steps: the
        per-step input bias (T, d), the input projection folded into the first layer's QKV map (3d, 2)
        and that layer's per-step QKV bias (T, 3d). An embedder computes them once per model."""
        T = num_steps
        if T > self.config.max_steps:
            raise ConfigError(f"window of {T} steps exceeds the encoder's max_steps {self.config.max_steps}")
        attn = self.encoder.layers[0].self_attn
        input_bias = self.input_projection.bias + self.positional[:T]  # type: ignore[index]
        w = attn.in_proj_weight @ self.input_projection.weight
        step_bias = F.linear(input_bias, attn.in_proj_weight, attn.in_proj_bias)
        return input_bias, w, step_bias

    def forward_inference(
        self,
        xy_agent: torch.Tensor,
        valid: torch.Tensor | None = None,
        constants: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``forward`` in eval mode, through ``scaled_dot_product_attention``: same weights, same result
        within float tolerance, faster on CPU than ``nn.MultiheadAttention``'s batched products.

        Each layer is the post-norm ``nn.TransformerEncoderLayer``: x = LN1(x + SA(x)),
        x = LN2(x + W2 GELU(W1 x)); dropout is off. Shapes as in ``forward``. ``constants``: this
        model's ``inference_constants(T)``, computed here when not given.
        """
        if self.training:
            raise RuntimeError("forward_inference is for eval mode; call model.eval() first")
        B, T, _ = xy_agent.shape
        if T > self.config.max_steps:
            raise ConfigError(f"window of {T} steps exceeds the encoder's max_steps {self.config.max_steps}")
        p = xy_agent / self.config.input_scale_m
        d = self.config.d_model
        input_bias, w, step_bias = self.inference_constants(T) if constants is None else constants
        # Maps of the 2 coordinates plus a per-step bias run as one batched multiply-add each (a
        # matrix product with an inner dimension of 2 and a separate addition are slower).
        x = torch.baddbmm(input_bias.expand(B, T, d), p, self.input_projection.weight.t().expand(B, 2, d))
        mask = None if valid is None else valid[:, None, None, :]  # (B, 1, 1, T): True = attend
        for i, layer in enumerate(self.encoder.layers):
            attn = layer.self_attn
            H = attn.num_heads
            if i == 0:
                # The first layer's input is linear in the 2 coordinates: the input projection is
                # folded into the QKV projection (a 2 -> 3d map plus a per-step bias, ``w`` and
                # ``step_bias``) instead of a 64 -> 3d product.
                qkv = torch.baddbmm(step_bias.expand(B, T, 3 * d), p, w.t().expand(B, 2, 3 * d))
                qkv = qkv.view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)
            else:
                qkv = (
                    F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
                    .view(B, T, 3, H, d // H)
                    .permute(2, 0, 3, 1, 4)
                )
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)  # (B, H, T, d/H)
            a = F.linear(a.transpose(1, 2).reshape(B, T, d), attn.out_proj.weight, attn.out_proj.bias)
            x = layer.norm1(x + a)
            x = layer.norm2(x + layer.linear2(F.gelu(layer.linear1(x))))
        if valid is None:
            pooled = x.mean(dim=1)
        else:
            w = valid.to(x.dtype)[..., None]
            pooled = (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return self._output(self.head(pooled).float(), xy_agent, valid)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
