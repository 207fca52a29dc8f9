"""The aesthetic gate: the competition's predictor, loaded through the real code, and its threshold."""

from __future__ import annotations

import pytest
import torch

from harness.config.registry import ModelSpec
from harness.models.scoring_registry import resolve_scoring_model
from harness.models.tiny_scorers import ensure_tiny_scorer
from harness.paths import cache_dir
from harness.score.aesthetic import gate
from harness.score.api import score_run
from tests.score_fixtures import noise_image, tiny_config, write_panels


def aesthetic_with_constant_head(folder, value: float):
    """The tiny predictor saved with a head whose weights make every score exactly `value`."""
    from aesthetics_predictor import AestheticsPredictorV2Linear
    from transformers import CLIPImageProcessor

    tiny = ensure_tiny_scorer("tiny-aesthetic", cache_dir())
    model = AestheticsPredictorV2Linear.from_pretrained(tiny)
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
                layer.bias.zero_()
        model.layers[-1].bias.fill_(value)
    model.save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor.from_pretrained(tiny).save_pretrained(folder)
    return f"local:{folder}"


@pytest.fixture(scope="module")
def panels_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panels")
    write_panels(folder, [noise_image(i) for i in range(8)])
    return folder


def test_gate_boundary():
    assert gate([5.999] * 8, 6.0, 8, 3)[0] is False
    assert gate([6.0] * 8, 6.0, 8, 3)[0] is True
    valid, mean, reasons = gate([7.0] * 7 + [4.0], 6.0, 8, 2)
    assert valid and mean == pytest.approx(6.625)
    valid, _, reasons = gate([6.0, 5.0, 7.0, 5.5, 6.0, 6.0, 6.0, 6.0], 6.0, 8, 2)
    assert not valid and "weakest: panel 2 (5.000), panel 4 (5.500)" in reasons[0]
    assert "only 7 usable panels, 8 required" in gate([9.0] * 7, 6.0, 8, 3)[2][0]


@pytest.mark.parametrize("value, valid", [(5.999, False), (6.0, True)])
def test_known_head_gives_known_score_and_gate(tmp_path, panels_dir, value, valid):
    ref = aesthetic_with_constant_head(tmp_path / "aesthetic", value)
    run = score_run(panels_dir, config=tiny_config(scorers=["aesthetic"], aesthetic_model=ref))
    scores = [p["aesthetic"] for p in run.metrics["aesthetic"].per_panel]
    assert scores == [pytest.approx(value, abs=1e-6)] * 8
    assert run.valid is valid
    assert run.exit_code == (0 if valid else 1)
    if not valid:
        assert "below 6" in run.metrics["aesthetic"].notes[0]


def test_scores_match_the_competition_formula(panels_dir):
    """logits[0][0] of AestheticsPredictorV2Linear on CLIPProcessor's pixels, image by image."""
    from aesthetics_predictor import AestheticsPredictorV2Linear
    from PIL import Image
    from transformers import CLIPImageProcessor

    folder = ensure_tiny_scorer("tiny-aesthetic", cache_dir())
    predictor = AestheticsPredictorV2Linear.from_pretrained(folder).eval()
    processor = CLIPImageProcessor.from_pretrained(folder)
    expected = []
    for path in sorted(panels_dir.iterdir()):
        with torch.no_grad():
            expected.append(
                predictor(**processor(images=Image.open(path), return_tensors="pt")).logits.tolist()[0][0]
            )
    run = score_run(panels_dir, config=tiny_config(scorers=["aesthetic"], threshold=0.0))
    got = [p["aesthetic"] for p in run.metrics["aesthetic"].per_panel]
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-8)
    assert len(set(got)) > 1  # the images differ, and so do their scores
    assert run.metrics["aesthetic"].models[0]["name"] == "tiny-aesthetic"
    assert len(run.metrics["aesthetic"].models[0]["sha256"]) == 64


def test_a_pinned_hash_refuses_other_weights():
    from harness.errors import HarnessError

    spec = ModelSpec("pinned", "aesthetic", "tiny-aesthetic", "test", sha256="0" * 64)
    with pytest.raises(HarnessError, match="refusing to score with different weights"):
        resolve_scoring_model(spec)
