"""CPU features in provenance records: parsed from /proc/cpuinfo text, and the INT8 warning they decide."""
from __future__ import annotations

import pytest

from flownas import provenance as prov

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 fma f16c avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 rdrand
"""
EPYC = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse sse4_2 avx f16c fma avx2 bmi2 sha_ni
processor\t: 1
flags\t\t: fpu sse sse4_2 avx f16c fma avx2 bmi2 sha_ni
"""
GRAVITON = """processor\t: 0
Features\t: fp asimd evtstrm aes sha1 crc32 atomics asimddp sha512 i8mm bf16 sve
"""


@pytest.mark.parametrize("text, features, dot", [
    (XEON, ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"), True),
    (EPYC, ("avx2", "fma", "f16c"), False),
    (GRAVITON, ("asimd", "asimddp", "i8mm", "bf16", "sve"), True),
    ("", (), False),
])
def test_features_are_read_in_a_fixed_order_and_decide_int8(text, features, dot):
    assert prov.cpu_features(text) == features
    assert prov.has_int8_dot_product(features) is dot
    assert (prov.cpu_int8_note(features) is None) is dot


def test_note_names_the_cpu_and_its_flags(monkeypatch):
    monkeypatch.setattr(prov, "cpu_model", lambda: "AMD EPYC")
    note = prov.cpu_int8_note(("avx2", "fma", "f16c"))
    assert note.startswith("this CPU (AMD EPYC: avx2 fma f16c) has no INT8 dot-product instructions")
    assert "\n" not in note


def test_every_record_carries_the_cpu_isa(monkeypatch):
    monkeypatch.setattr(prov, "cpu_features", lambda cpuinfo=None: ("avx2", "fma"))
    record = prov.provenance("onnx")
    assert tuple(record) == prov.RECORD_KEYS and record["cpu_isa"] == "avx2 fma"
    assert prov.provenance("onnx", device="NVIDIA H100")["cpu_isa"] == "avx2 fma"  # the host runs ORT CPU parts
