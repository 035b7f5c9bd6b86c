"""--precision=auto: bfloat16 on bfloat16 matrix units for presets checked in bfloat16."""

import dataclasses

import pytest

from sgan_keras import SGAN, PRESETS
from sgan_keras import distribute

CHECKED = [name for name, preset in PRESETS.items() if preset.config.model.bfloat16_checked_in]
UNCHECKED = [name for name in PRESETS if name not in CHECKED]


@pytest.mark.parametrize("precision, units, checked, manifold, expected", [
    ("auto", "AMX", "results.md", "none", "mixed_bfloat16"),
    ("auto", "", "results.md", "none", "float32"),          # no bfloat16 units
    ("auto", "AMX", "", "none", "float32"),                 # preset not checked
    ("auto", "AMX", "results.md", "lecouat", "float32"),    # manifold needs float32
    ("float32", "AMX", "results.md", "none", "float32"),
    ("mixed_bfloat16", "", "", "none", "mixed_bfloat16"),
])
def test_auto_precision_rule(precision, units, checked, manifold, expected):
    model = dataclasses.replace(PRESETS["mnist_blog"].config.model, precision=precision,
                                bfloat16_checked_in=checked, manifold=manifold)
    assert model.resolved_precision(units) == expected


def test_checked_presets_train_in_bfloat16_on_matrix_units_and_the_rest_in_float32(monkeypatch):
    assert CHECKED and UNCHECKED
    monkeypatch.setenv(distribute.BFLOAT16_UNITS_VARIABLE, "test units")
    assert SGAN.from_preset(CHECKED[0], seed=0).precision == "mixed_bfloat16"
    assert SGAN.from_preset(UNCHECKED[0], seed=0).precision == "float32"
    assert SGAN.from_preset(CHECKED[0], seed=0, precision="float32").precision == "float32"
    monkeypatch.setenv(distribute.BFLOAT16_UNITS_VARIABLE, "0")
    assert SGAN.from_preset(CHECKED[0], seed=0).precision == "float32"


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse avx512f avx512_bf16 amx_bf16 amx_tile", "CPU with amx_bf16, avx512_bf16"),
    ("fpu sse avx512f avx512_bf16", "CPU with avx512_bf16"),
    ("fpu sse avx512f avx512_vnni", ""),
])
def test_cpu_probe_reads_the_bfloat16_flags(tmp_path, monkeypatch, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
    monkeypatch.delenv(distribute.BFLOAT16_UNITS_VARIABLE)
    monkeypatch.setattr(distribute, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(distribute.tf.config, "list_physical_devices", lambda kind: [])
    assert distribute.bfloat16_matrix_units() == expected


@pytest.mark.parametrize("precision, units, expected", [
    ("auto", "", "--precision=auto: float32 (bfloat16 matrix units: none;"),
    ("auto", "AMX", "--precision=auto: mixed_bfloat16 (bfloat16 matrix units: AMX;"),
    ("mixed_bfloat16", "", "warning: --precision=mixed_bfloat16 on a device without bfloat16"),
    ("mixed_bfloat16", "AMX", ""),     # asked for, and the hardware has it: nothing to say
    ("float32", "", ""),
])
def test_the_trainer_says_what_auto_chose_and_warns_of_emulated_bfloat16(precision, units,
                                                                         expected):
    model = dataclasses.replace(PRESETS["mnist_blog"].config.model, precision=precision)
    line = model.precision_line(units)
    assert line.startswith(expected) and bool(line) == bool(expected)
    assert "\n" not in line


def test_the_auto_line_says_manifold_regularization_is_why_a_checked_preset_is_float32():
    # The line said "float32 (bfloat16 matrix units: ...; bfloat16 accuracy: <checked
    # file>)" for mnist_blog with --manifold_reg: every reason it gave was for bfloat16.
    model = dataclasses.replace(PRESETS["mnist_blog"].config.model, manifold="blog")
    assert model.precision_line("AMX").endswith("; --manifold_reg needs float32)")
    assert "manifold" not in PRESETS["mnist_blog"].config.model.precision_line("AMX")
