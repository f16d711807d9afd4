"""Function-matching augmentation of the KD fine-tune: random resized crops and mixup."""

from __future__ import annotations

import copy

import pytest
import torch

from edgecompress.errors import ConfigError
from edgecompress.passes.distill import DistillConfig, _augment, _mix_labels, _random_resized_crop, finetune

pytestmark = pytest.mark.usefixtures("one_thread")


def _ramps(n: int, size: int = 64) -> torch.Tensor:
    """Channel 0 = x coordinate, channel 1 = y coordinate, both in [-1, 1] (pixel centres)."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx, yy]).expand(n, 2, size, size).contiguous()


def test_random_resized_crop_covers_the_asked_area_and_aspect():
    x = _ramps(64)
    out = _random_resized_crop(x, 0.35, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # a crop of a linear ramp is a linear ramp; its slope relative to the original is the crop's
    # width (height) as a fraction of the image
    sw = (out[:, 0, :, -1] - out[:, 0, :, 0]).mean(1) / (x[0, 0, 0, -1] - x[0, 0, 0, 0])
    sh = (out[:, 1, -1, :] - out[:, 1, 0, :]).mean(1) / (x[0, 1, -1, 0] - x[0, 1, 0, 0])
    area, aspect = sw * sh, sw / sh
    assert float(area.min()) >= 0.35 - 1e-3 and float(area.max()) <= 1 + 1e-3
    assert float(aspect.min()) >= 0.75 - 1e-3 and float(aspect.max()) <= 4 / 3 + 1e-3
    assert float(area.std()) > 0.05  # a different crop per sample
    # the crop stays inside the image: its values are a sub-range of the original's
    assert float(out.min()) >= float(x.min()) - 1e-5 and float(out.max()) <= float(x.max()) + 1e-5


def test_mixup_mixes_images_and_labels_with_the_same_ratio():
    n, k = 32, 40
    y = torch.arange(n) % k
    x = y.float().view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()  # image i is the constant y_i
    cfg = DistillConfig(shift=0, mixup=1.0)
    xm, mix = _augment(x, cfg, torch.Generator().manual_seed(1))
    assert mix is not None
    lam, perm = mix
    assert float(lam.min()) >= 0 and float(lam.max()) <= 1 and float(lam.std()) > 0.1  # Beta(1, 1)
    ym = _mix_labels(y, mix, k)
    assert torch.allclose(ym.sum(1), torch.ones(n))
    # the mixed image's value is the mixed label's mean class: image and label got the same ratio
    assert torch.allclose(xm[:, 0, 0, 0], ym @ torch.arange(k, dtype=torch.float32), atol=1e-5)
    assert not torch.equal(perm, torch.arange(n))


def test_augment_is_reproducible_and_leaves_other_inputs_alone():
    x = torch.randn(8, 3, 16, 16)
    cfg = DistillConfig(shift=1, hflip=True, crop=0.5, mixup=0.4)
    a, _ = _augment(x, cfg, torch.Generator().manual_seed(3))
    b, _ = _augment(x, cfg, torch.Generator().manual_seed(3))
    c, _ = _augment(x, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    flat = torch.randn(8, 20)  # not an image batch: untouched, no mixing
    assert _augment(flat, cfg, torch.Generator().manual_seed(3)) == (flat, None)


@pytest.mark.parametrize("bad", [{"crop": 1.0}, {"crop": -0.1}, {"mixup": -1.0}])
def test_bad_augmentation_settings_are_refused(bad):
    with pytest.raises(ConfigError, match=f"distill.{next(iter(bad))}"):
        DistillConfig(**bad)


def test_function_matching_finetune_pulls_a_perturbed_student_back(digits_spec, digits_calib):
    """crop + mixup + labels through the whole loop: the student, its weights disturbed, ends
    closer to the teacher on the plain (unaugmented) images than it started."""
    from edgecompress.passes.distill import softmax_kl

    teacher = digits_spec.module.eval()
    student = copy.deepcopy(teacher)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.15 * p.abs().mean() * torch.randn(p.shape, generator=g))
    x = torch.from_numpy(digits_calib.x[:512])

    def gap() -> float:
        with torch.no_grad():
            return float(softmax_kl(student(x), teacher(x)))

    before = gap()
    cfg = DistillConfig(epochs=3, lr=1e-3, batch_size=64, alpha=0.7, shift=0, crop=0.5, mixup=1.0,
                        bn_recalib=False)
    curve: list[tuple[int, float, bool, float]] = []
    log = finetune(student, teacher, digits_calib, cfg, progress=False,
                   on_epoch=lambda e, loss: curve.append((e, loss, student.training, gap())))
    assert log["epochs"] == 3 and log["last_loss"] == curve[-1][1]
    assert [c[0] for c in curve] == [1, 2, 3] and not any(c[2] for c in curve)  # called in eval mode
    assert curve[-1][3] == pytest.approx(gap())  # the last callback saw the final student
    assert gap() < 0.5 * before


def test_teacher_view_gets_the_same_draws_as_the_student_batch():
    """`teacher_data` (the same samples at another side) is augmented with the student's random
    draws: with flips and mixup, which commute with a nearest 2x upsampling, every teacher batch is
    exactly the student batch upsampled."""
    import numpy as np

    from edgecompress.data import Dataset

    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 4, 4, generator=g)
    big = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    seen: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    teacher = torch.nn.Sequential(torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(48, 5))
    student.register_forward_pre_hook(lambda m, a: seen["student"].append(a[0].detach().clone()))
    teacher.register_forward_pre_hook(lambda m, a: seen["teacher"].append(a[0].detach().clone()))
    cfg = DistillConfig(epochs=2, batch_size=8, shift=0, hflip=True, mixup=1.0, bn_recalib=False)
    teacher.train()  # the caller's module: it runs in eval mode while teaching, and gets its mode back
    finetune(student, teacher, Dataset(x.numpy()), cfg, progress=False,
             teacher_data=Dataset(np.ascontiguousarray(big.numpy())))
    assert teacher.training
    assert len(seen["student"]) == len(seen["teacher"]) == 6
    mixed = 0
    for s, t in zip(seen["student"], seen["teacher"], strict=True):
        assert t.shape[-1] == 8 and s.shape[-1] == 4
        torch.testing.assert_close(t, s.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
        mixed += not any(torch.allclose(s[0], x[j]) for j in range(24))
    assert mixed > 0  # the batches were augmented, not passed through
    with pytest.raises(ConfigError, match="teacher_data must be one tensor of 24 samples"):
        finetune(student, teacher, Dataset(x.numpy()), cfg, progress=False,
                 teacher_data=Dataset(big[:10].numpy()))
