"""The CPU description results files carry."""

from builders import machine


def test_the_cpu_model_and_its_vector_extensions(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
    )
    described = machine.describe(cpuinfo)
    assert described["cpu_model"] == "AMD EPYC 7B13"
    assert described["vector_extensions"] == ["avx", "avx2", "fma"]
    assert described["cores"] >= 1
    assert machine.line({**described, "cores": 2}) == "AMD EPYC 7B13 (avx, avx2, fma), 2 cores"


def test_this_machine_is_described():
    assert machine.describe()["cpu_model"] != "unknown"
