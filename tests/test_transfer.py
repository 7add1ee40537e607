"""cvlab.transfer: head replacement, freezing, parameter groups and feature caching."""
import pytest
import torch
from torch import nn
from torchvision import models as tvm

from cvlab.loaders import InMemoryLoader
from cvlab.models import CompactCNN, count_parameters
from cvlab.transfer import extract_features, freeze, param_groups, replace_head, unfreeze


@pytest.mark.parametrize("name, head", [("mobilenet_v2", "classifier.1"), ("resnet18", "fc"), ("vit_b_16", "heads.head")])
def test_replace_head_finds_the_last_linear(name, head):
    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None)
    old = model.get_submodule(head)
    new = replace_head(model, 7)
    assert model.get_submodule(head) is new and new.in_features == old.in_features and new.out_features == 7
    if name == "mobilenet_v2":
        assert model.eval()(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_replace_head_with_dropout_and_errors():
    model = CompactCNN()
    new = replace_head(model, 3, dropout=0.3)
    assert isinstance(model.classifier[-1], nn.Sequential) and model.classifier[-1][1] is new
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    with pytest.raises(ValueError, match="no nn.Linear"):
        replace_head(nn.Sequential(nn.Conv2d(1, 2, 3)), 3)
    with pytest.raises(ValueError, match="num_classes"):
        replace_head(model, 0)


def test_freeze_and_unfreeze_decide_what_the_optimizer_changes():
    torch.manual_seed(0)
    model = CompactCNN()
    total = count_parameters(model)
    frozen = freeze(model.features)
    assert frozen == count_parameters(model.features) and freeze(model.features) == 0  # idempotent
    assert count_parameters(model, trainable_only=True) == total - frozen
    before = {n: p.clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    nn.functional.cross_entropy(model(torch.rand(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith("features."), n
        assert (p.grad is None) == n.startswith("features."), n
    assert unfreeze(model.features) == frozen
    assert count_parameters(model, trainable_only=True) == total


def test_param_groups_give_each_part_its_learning_rate():
    model = tvm.mobilenet_v2(weights=None)
    freeze(model.features[:14])
    groups = param_groups(model, {"features": 1e-4, "features.18": 5e-4, "classifier": 1e-3})
    by_name = {g["name"]: g for g in groups}
    assert {n: g["lr"] for n, g in by_name.items()} == {"features": 1e-4, "features.18": 5e-4, "classifier": 1e-3}
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(by_name["features.18"]["params"]) == ids(model.features[18].parameters())  # the longest name wins
    assert ids(by_name["features"]["params"]) == ids(p for m in model.features[14:18] for p in m.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(model, trainable_only=True)
    opt = torch.optim.AdamW(groups)
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 5e-4, 1e-3]


def test_param_groups_errors():
    model = tvm.mobilenet_v2(weights=None)
    with pytest.raises(ValueError, match="nearest: .*classifier"):
        param_groups(model, {"clasifier": 1e-3})
    with pytest.raises(ValueError, match="not under any of .*features.0.0.weight"):
        param_groups(model, {"classifier": 1e-3})


def _small_frozen_net():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    head = nn.Linear(16, 2)
    for _ in range(3):  # give BatchNorm running statistics that differ from their start
        backbone.train()(torch.rand(8, 1, 10, 10) * 3)
    return backbone, head


def test_extract_features_matches_the_module_and_keeps_batchnorm(toy_data):
    images, labels = toy_data
    backbone, _ = _small_frozen_net()
    stats = backbone[1].running_mean.clone()
    loader = InMemoryLoader(images, labels, 32)
    feats, ys = extract_features(backbone, loader, progress=False, device="cpu")
    x = torch.cat([xb for xb, _ in loader])
    with torch.no_grad():
        expected = backbone.eval()(x)
    backbone.train()
    assert feats.shape == (200, 16) and feats.dtype == torch.float32 and torch.allclose(feats, expected)
    assert torch.equal(ys, labels)
    assert backbone.training, "the module's mode is restored"
    assert torch.equal(backbone[1].running_mean, stats), "BatchNorm statistics unchanged"
    dataset = torch.utils.data.TensorDataset(x, labels)  # a Dataset is batched for you
    assert torch.allclose(extract_features(backbone, dataset, batch_size=64, progress=False)[0], expected)


def test_training_on_cached_features_equals_training_the_frozen_network(toy_data):
    """Feature caching changes the cost, not the result."""
    images, labels = toy_data
    x = images.float() / 255
    backbone, head = _small_frozen_net()
    freeze(backbone)
    full = nn.Sequential(backbone, head)
    cached_head = nn.Linear(16, 2)
    cached_head.load_state_dict(head.state_dict())
    feats, _ = extract_features(backbone, torch.utils.data.TensorDataset(x, labels), progress=False)
    opt_full = torch.optim.SGD(head.parameters(), lr=0.5)
    opt_cached = torch.optim.SGD(cached_head.parameters(), lr=0.5)
    for idx in torch.arange(200).split(50):
        full.train()
        backbone.eval()  # a frozen part stays in eval mode
        opt_full.zero_grad()
        nn.functional.cross_entropy(full(x[idx]), labels[idx]).backward()
        opt_full.step()
        opt_cached.zero_grad()
        nn.functional.cross_entropy(cached_head(feats[idx]), labels[idx]).backward()
        opt_cached.step()
    assert torch.allclose(head.weight, cached_head.weight, atol=1e-6)


def test_extract_features_bad_data():
    with pytest.raises(ValueError, match="no batches"):
        extract_features(nn.Identity(), [], progress=False)
    with pytest.raises(ValueError, match=r"\(images, labels\) pairs"):
        extract_features(nn.Identity(), [torch.zeros(2, 3)], progress=False)


def test_frozen_prefix_keeps_its_first_blocks_fixed_in_train_mode():
    from cvlab.transfer import FrozenPrefix
    blocks = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    body = FrozenPrefix(blocks, 2)
    body.train()
    assert not body[1].training and body[3].training
    assert not any(p.requires_grad for p in body[:2].parameters()) and all(p.requires_grad for p in body[2:].parameters())
    before = body[1].running_mean.clone()
    body(torch.rand(2, 3, 9, 9))
    assert torch.equal(before, body[1].running_mean)              # frozen BatchNorm statistics do not move
    with pytest.raises(ValueError, match="frozen must be in 0..4"):
        FrozenPrefix(blocks, 5)
