"""`model.pretrained=true`: timm's weights from a local Hugging Face cache (built here in a temp folder from a timm
test model), with or without HF_HUB_OFFLINE and never asking the hub for them; a one-line error in seconds when
neither the cache nor the hub can serve them. The hub itself is never reached by these tests."""

from __future__ import annotations

import time

import pytest
import timm
import torch
from helpers import FAST, error_line, read_metrics, run_main, run_task
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from imgcls.models.factory import create_classifier
from imgcls.models.weights import ModelConfigError

NAME = "test_resnet"  # timm's default tag: timm/test_resnet.r160_in1k on the hub
REPO = timm.models.get_pretrained_cfg(NAME).hf_hub_id
CLOSED = "http://127.0.0.1:9"  # nothing listens there: a hub that cannot be reached, at once


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path (as HF_HUB_CACHE would point to), an unreachable endpoint, and a
    hub download that fails the test if anything calls it."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", CLOSED)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_hub(*args, **kwargs):
        raise AssertionError(f"the hub was asked for {args} {kwargs}")

    monkeypatch.setattr("timm.models._hub.hf_hub_download", no_hub)
    return cache


def put_in_cache(cache, state: dict[str, torch.Tensor], filename: str = "model.safetensors") -> None:
    """The layout huggingface_hub's own downloads leave: refs/main -> snapshots/<commit>/<file>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / commit / filename))


def imagenet_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return timm.create_model(NAME).state_dict()  # 1000 classes, 3 channels: what the hub holds


@pytest.mark.parametrize("offline", ["1", None])
def test_cached_weights_load_with_or_without_hf_hub_offline(hub, monkeypatch, offline):
    cached = imagenet_weights()
    put_in_cache(hub, cached)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    model = create_classifier(NAME, num_classes=1000, pretrained=True)
    mine = model.state_dict()
    assert mine.keys() == cached.keys()
    assert all(torch.equal(mine[k], cached[k]) for k in cached)


def test_cached_weights_get_a_new_head_and_a_grayscale_stem(hub):
    cached = imagenet_weights()
    put_in_cache(hub, cached)
    model = create_classifier(NAME, num_classes=3, in_chans=1, pretrained=True)
    mine = model.state_dict()
    head, stem = model.pretrained_cfg["classifier"], model.pretrained_cfg["first_conv"]
    assert mine[f"{head}.weight"].shape[0] == 3  # re-initialised for 3 classes
    torch.testing.assert_close(mine[f"{stem}.weight"], adapt_input_conv(1, cached[f"{stem}.weight"]))
    body = [k for k in cached if not k.startswith((head, stem)) and "num_batches_tracked" not in k]
    assert body and all(torch.equal(mine[k], cached[k]) for k in body)


def test_a_pytorch_bin_in_the_cache_works_too(hub):
    """Older hub repos hold pytorch_model.bin only (timm falls back to it)."""
    cached = imagenet_weights()
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = hub / f"models--{REPO.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.save(cached, repo / "snapshots" / commit / "pytorch_model.bin")
    model = create_classifier(NAME, num_classes=1000, pretrained=True)
    assert all(torch.equal(model.state_dict()[k], cached[k]) for k in cached)


@pytest.mark.parametrize(
    "offline,expected",
    [("1", "HF_HUB_OFFLINE=1 keeps the hub away"), (None, f"{CLOSED} cannot be reached")],
)
def test_neither_cache_nor_hub_is_one_line_in_seconds(hub, monkeypatch, offline, expected):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    start = time.perf_counter()
    with pytest.raises(ModelConfigError) as caught:
        create_classifier(NAME, num_classes=3, pretrained=True)
    assert time.perf_counter() - start < 10  # timm alone retries the hub for about a minute
    message = str(caught.value)
    assert "\n" not in message and expected in message
    assert f"model.name='{NAME}' ({REPO})" in message and str(hub) in message and "model.pretrained_path=" in message


def test_a_model_without_hub_weights_is_named(hub):
    with pytest.raises(ModelConfigError, match=r"timm has no hub weights for model.name='botnet50ts_256'"):
        create_classifier("botnet50ts_256", num_classes=3, pretrained=True)


def test_pretrained_path_wins_and_asks_no_hub(hub, tmp_path):
    own = imagenet_weights()
    torch.save(own, tmp_path / "own.pth")
    model = create_classifier(NAME, num_classes=1000, pretrained=True, pretrained_path=str(tmp_path / "own.pth"))
    assert all(torch.equal(model.state_dict()[k], own[k]) for k in own)


def test_train_cli_says_it_in_one_line(hub, image_tree, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = run_main("train.py", "data=folder", f"data.root={image_tree}", *FAST, "model.pretrained=true")
    assert error_line(proc).startswith(f"model.pretrained=true: timm's weights for model.name='{NAME}'")


def test_a_tag_timm_does_not_know_is_one_line(hub):
    with pytest.raises(ModelConfigError, match=r"timm has no hub weights for model.name='resnet18.bogus' \(tags"):
        create_classifier("resnet18.bogus", num_classes=3, pretrained=True)


@pytest.fixture
def local_hub(hub, monkeypatch):
    """`status -> None`: a local HTTP endpoint answering HEAD with that status, as HF_ENDPOINT."""
    import http.server
    import threading

    from huggingface_hub import constants

    servers = []

    def start(status: int) -> None:
        class Answer(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802 (http.server's name)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")

    yield start
    for server in servers:
        server.shutdown()


def test_a_hub_that_answers_with_an_error_status_is_not_used(local_hub):
    """A proxy's 407/502 or a captive portal answers, but cannot serve weights: the one line, not a download."""
    local_hub(502)
    with pytest.raises(ModelConfigError, match=r"cannot be reached \(HTTP 502"):
        create_classifier(NAME, num_classes=3, pretrained=True)


def test_a_reachable_hub_is_asked_when_the_cache_lacks_the_weights(local_hub):
    local_hub(200)
    with pytest.raises(AssertionError, match="the hub was asked"):  # the fixture's stand-in for the download
        create_classifier(NAME, num_classes=3, pretrained=True)


def test_the_competition_recipe_starts_from_pretrained_weights():
    from helpers import compose

    assert compose("train", ["experiment=mask", "data.root=/tmp"]).model.pretrained is True


def test_a_resumed_pretrained_run_needs_neither_cache_nor_hub(hub, folder_run, image_tree, monkeypatch, tmp_path):
    """Its weights come from the checkpoint: model.pretrained=true is not looked up again."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = folder_run / "checkpoints" / "last.ckpt"
    args = ("data=folder", f"data.root={image_tree}", "data.test_fraction=0.2", *FAST, "model.pretrained=true")
    run = run_task("train", *args, f"ckpt_path={ckpt}", "trainer.max_epochs=2", run_dir=tmp_path / "resumed")
    assert read_metrics(run.run_dir)["epochs"] == 2


def test_transformers_offline_keeps_the_hub_away_too_and_is_named(hub, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    with pytest.raises(ModelConfigError, match=r"and TRANSFORMERS_OFFLINE=1 keeps the hub away"):
        create_classifier(NAME, num_classes=3, pretrained=True)
