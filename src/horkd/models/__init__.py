"""Networks that map an image to ``ModelOutput(embedding, logits)``, built by name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from horkd.models import cifar_resnet, small_cnn, torchvision_models  # noqa: F401  (register)
from horkd.models.head import EmbeddingClassifier, ModelOutput
from horkd.models.pretrained import is_weights_name, pretrained_backbone
from horkd.models.registry import BACKBONES
from horkd.models.size_norm import keep_statistics_per_size
from horkd.models.timm_models import PREFIX as TIMM_PREFIX
from horkd.models.timm_models import build_timm

# The original model's classifier, dropped from users' files unless the backbone keeps a layer of
# that name (mobilenet_v3's pre-logit Linear, timm's head.norm).
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.")
_WRAPPER_KEYS = ("state_dict", "model")  # training scripts nest the weights under these


def build_backbone(
    arch: str, in_channels: int = 3, width: int | None = None, **kwargs: object
) -> nn.Module:
    """``timm:<name>`` goes to timm; every other name must be registered.

    Args:
        arch: A registered name (:func:`list_models`) or ``timm:<name>``.
        in_channels: Channels of the input images (1 grey, 3 RGB).
        width: Width of the first stage, for families that scale by it (``None``: the
            family's default); torchvision and timm models take theirs from the name.
        **kwargs: Passed on to the factory.

    Returns:
        A backbone that maps ``[B, in_channels, H, W]`` to pooled features ``[B, F]`` and
        says ``out_features = F``.

    Raises:
        horkd.registry.UnknownNameError: ``arch`` is not registered (the message names the
            closest known one).
        TypeError: The factory does not take a keyword, or ``width`` is given to a
            fixed-width family.
        ImportError: ``arch`` is a timm name and timm is not installed.
    """
    if arch.startswith(TIMM_PREFIX):
        return build_timm(arch[len(TIMM_PREFIX) :], in_channels, width, **kwargs)
    return BACKBONES.get(arch)(in_channels=in_channels, width=width, **kwargs)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file, never unpickling arbitrary code.

    Weights nested under ``state_dict`` or ``model`` (as training scripts save them) are
    unwrapped, a ``module.`` prefix (DataParallel) is dropped, and entries that are not
    tensors are left out.

    Args:
        path: The weights file.

    Returns:
        The tensors by parameter name.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        horkd.safe_load.UnsafeCheckpointError: The pickle needs more than tensors to load.
        ValueError: The file cannot be read as weights, or holds something other than a state
            dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model weights file not found: {path}")
    from horkd.safe_load import UnsafeCheckpointError, load_pickled_weights

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path))
        else:
            state = load_pickled_weights(path)
    except UnsafeCheckpointError:
        raise
    except Exception as exc:  # pickle, zip and safetensors errors all mean "not a weights file"
        raise ValueError(f"cannot read model weights from {path}: {exc}") from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load users' torchvision/timm/own backbone weights; any mismatch is a readable ValueError.

    The original model's classifier (``fc.``, ``classifier.``, ``head.``) is dropped unless
    the backbone has a layer of that name and shape. Everything else must match exactly.

    Args:
        backbone: A backbone from :func:`build_backbone`; loaded in place.
        path: A ``.safetensors`` or ``.pth``/``.pt`` file (see :func:`read_state_dict`).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        horkd.safe_load.UnsafeCheckpointError: The pickle needs more than tensors to load.
        ValueError: The file is not a state dict, or its keys or shapes do not fit the
            backbone (the message lists the missing, unexpected and misshapen keys).
    """
    load_backbone_state(backbone, read_state_dict(path), str(path))


def load_backbone_state(backbone: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """:func:`load_backbone_weights` for tensors already read (``source`` names them in errors).

    Raises:
        ValueError: The keys or shapes do not fit the backbone.
    """
    target = backbone.net if isinstance(getattr(backbone, "net", None), nn.Module) else backbone
    expected = target.state_dict()
    if target is not backbone and state and all(k.startswith("net.") for k in state):
        state = {k.removeprefix("net."): v for k, v in state.items()}  # saved from a horkd backbone
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith(CLASSIFIER_PREFIXES) or (k in expected and expected[k].shape == v.shape)
    }
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(v.shape)} (model has {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and expected[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        problems = [
            f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong_shape),
            )
            if keys
        ]
        raise ValueError(
            f"weights in {source} do not fit this {type(target).__name__} backbone; "
            + "; ".join(problems)
            + ". Check the architecture and in_channels match the file."
        )
    target.load_state_dict(state, strict=False)  # strictness checked above, with better words


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    embed_dim: int | None = 128,
    width: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    weights_path: str | Path | None = None,
    norm_sizes: Sequence[int] | None = None,
    work_size: int | None = None,
    **kwargs: object,
) -> EmbeddingClassifier:
    """The one way the rest of horkd makes a network; ``kwargs`` go to the backbone factory.

    ``norm_sizes`` (two or more input sides) keeps BatchNorm statistics per side, for a native
    student trained across LR sizes (``horkd.models.size_norm``), picked by the input's own
    side before ``work_size`` resizes it (:class:`EmbeddingClassifier`).

    Args:
        arch: A registered backbone name (:func:`list_models`) or ``timm:<name>``.
        num_classes: Outputs of the classifier (K).
        in_channels: Channels of the input images (1 grey, 3 RGB).
        embed_dim: Width D of the embedding; ``None``: the pooled features are the embedding.
        width: Width of the backbone's first stage; see :func:`build_backbone`.
        mean: Per-channel mean in [0, 1] pixel units (one value: every channel); ``None``: 0.
            The model normalises, so data stays in [0, 1].
        std: Per-channel standard deviation in [0, 1] pixel units; ``None``: 1.
        weights_path: Backbone weights to start from: a file (see
            :func:`load_backbone_weights`), or pretrained weights by name (``DEFAULT``,
            ``IMAGENET1K_V1``) for a torchvision or timm architecture
            (``horkd.models.pretrained``).
        norm_sizes: Input sides, in pixels, that keep their own BatchNorm statistics.
        work_size: Side, in pixels, every input is resized to first (``None``: none).
        **kwargs: Passed on to the backbone factory.

    Returns:
        The network; it maps images ``[B, in_channels, H, W]`` with pixels in [0, 1] to
        ``ModelOutput(embedding [B, D], logits [B, K])``.

    Raises:
        horkd.registry.UnknownNameError: ``arch`` is not registered.
        TypeError: A keyword the factory does not take, or a backbone without ``out_features``.
        ValueError: ``mean``/``std`` of the wrong length, a ``std`` not positive, or weights
            that do not fit.
        FileNotFoundError: ``weights_path`` is not a file.
        ImportError: ``arch`` is a timm name and timm is not installed.
    """
    if weights_path is not None and is_weights_name(weights_path):
        backbone = pretrained_backbone(arch, str(weights_path), in_channels, width, **kwargs)
    else:
        backbone = build_backbone(arch, in_channels, width, **kwargs)
        if weights_path is not None:
            load_backbone_weights(backbone, weights_path)
    model = EmbeddingClassifier(backbone, num_classes, embed_dim, mean, std, work_size)
    model.in_channels = in_channels
    if norm_sizes is not None and len(set(norm_sizes)) > 1:
        keep_statistics_per_size(model, norm_sizes)
    return model


def list_models() -> list[str]:
    """Registered names; any ``timm:<name>`` works too when timm is installed.

    Returns:
        The names :func:`build_model` takes as ``arch``, sorted.
    """
    return BACKBONES.names()


__all__ = [
    "BACKBONES",
    "TIMM_PREFIX",
    "EmbeddingClassifier",
    "ModelOutput",
    "build_backbone",
    "build_model",
    "list_models",
    "load_backbone_state",
    "load_backbone_weights",
    "read_state_dict",
]
