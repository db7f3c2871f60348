"""Generated practice (vmsim/lessons/practice*.py): each generator's answers come from the
simulator's events; here they are checked against oracles that do not use vmsim's MMU or
kvm.ko: a plain-Python walk of the tables the guest writes, the SDM's I/O qualification
layout computed from the instruction, KVM's shadow-paging rules (paging_tmpl.h), the
host's real KVM and qemu-system-i386 (when present), and nasm for the encodings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from vmsim.lessons.practice import GENERATORS, Problem, Question, generate, parse_answers, validate

SEEDS = range(20)


def _wrong(kind: str, value):
    if kind == "text":
        return "1, 2, 3, 4, 5, 6, 7, 8, 9, 10" if value != "1, 2, 3, 4, 5, 6, 7, 8, 9, 10" else "none"
    return value + 1


@pytest.fixture(scope="module")
def problems() -> dict[tuple[str, int], Problem]:
    return {(g, s): generate(g, s) for g in GENERATORS for s in SEEDS}


@pytest.mark.parametrize("gen", GENERATORS)
def test_own_answers_check_and_each_wrong_answer_is_caught(gen, problems):
    for s in SEEDS:
        p = problems[gen, s]
        assert p.generator == gen and p.seed == s
        assert set(p.answers) == {q.id for q in p.questions}
        assert all(p.check(p.answers).values()), (gen, s)
        for q in p.questions:
            given = dict(p.answers)
            given[q.id] = _wrong(q.kind, p.answers[q.id])
            result = p.check(given)
            assert not result[q.id] and sum(result.values()) == len(result) - 1, (gen, s, q.id)
        assert not any(p.check({}).values())
        for lang in ("en", "zh-CN"):
            assert f"{s}" in p.prompt[lang] and p.solution[lang].strip()
            assert all(q.text[lang].strip() for q in p.questions)


@pytest.mark.parametrize("gen", GENERATORS)
def test_same_seed_same_problem_other_seed_other_problem(gen, problems):
    for s in SEEDS[:3]:
        again = generate(gen, s)
        assert again == problems[gen, s]
        assert (again.prompt, again.solution, again.guest_source) == \
            (problems[gen, s].prompt, problems[gen, s].solution, problems[gen, s].guest_source)
    assert len({problems[gen, s].guest_source for s in SEEDS}) == len(SEEDS)
    assert len({problems[gen, s].prompt["en"] for s in SEEDS}) == len(SEEDS)


def test_answers_in_other_spellings():
    p = generate("exit_prediction", 12)
    given = dict(p.answers)
    for q in p.questions:
        v = p.answers[q.id]
        if q.kind == "hex":
            given[q.id] = f"{v:#x}".upper().replace("0X", "0x") if v % 2 else f"{v:x}"
        elif q.kind == "text" and v != "none":
            given[q.id] = "  ".join(reversed(v.split(", ")))
        elif q.kind == "int" and v == -1:
            given[q.id] = "none"
    assert all(p.check(given).values())
    assert not p.check({"exits": "x, y"})["exits"]
    nothing = Problem("exit_prediction", 0, {}, [Question("exits", {}, "text")], {"exits": "none"}, {})
    assert nothing.check({"exits": "none"})["exits"] and nothing.check({"exits": []})["exits"]
    assert not nothing.check({"exits": " "})["exits"]  # a blank field is no answer
    typed = "; ".join(f"{q.id}={p.answers[q.id]:#x}" if q.kind == "hex" else f"{q.id}={p.answers[q.id]}"
                      for q in p.questions)
    assert all(p.check(parse_answers(typed)).values())
    assert all(p.check({q.id: p.answer_text(q.id) for q in p.questions}).values())
    assert p.answer_text("qual_6") == "0x2E00001" and p.answer_text("exits") == "3, 6, 8, 9"
    with pytest.raises(ValueError, match="expected id=value"):
        parse_answers("exits 1, 2")


def test_params_are_validated():
    with pytest.raises(ValueError, match=r"unknown parameter 'colour'.*known: entries"):
        generate("ept_walk", 1, {"colour": 3})
    with pytest.raises(ValueError, match="'lines' must be between 5 and 10"):
        generate("exit_prediction", 1, {"lines": 40})
    with pytest.raises(ValueError, match="'guest_faults' must be true or false"):
        generate("shadow_faults", 1, {"guest_faults": 1})
    with pytest.raises(ValueError, match="unknown practice generator 'tlb'"):
        generate("tlb", 1)
    with pytest.raises(ValueError, match="'entries' must be an integer"):
        validate("ept_walk", {"entries": "3"})
    assert validate("shadow_faults", {}) == {"accesses": None, "page_tables": 2, "guest_faults": True,
                                             "table_writes": True}
    assert len(_listing(generate("exit_prediction", 4, {"lines": 5}))) == 5
    assert len(_listing(generate("shadow_faults", 4, {"accesses": 4}))) == 4
    p = generate("shadow_faults", 4, {"guest_faults": False, "accesses": 8, "table_writes": False})
    assert p.answers["injected"] == 0 and "page-table" not in p.solution["en"].split("The rules")[0]


# -- independent oracles ----------------------------------------------------------------------

def _stores(source: str) -> dict[int, int]:
    """The dwords the guest stores with `mov dword [ADDR], VALUE` (its tables)."""
    return {int(a, 16): int(v, 16) for a, v in
            re.findall(r"mov dword \[0x([0-9A-F]+)\], 0x([0-9A-F]+)", source)}


def _nums(answer: str) -> set[int]:
    return set() if answer == "none" else {int(n) for n in answer.split(", ")}


def _listing(p: Problem) -> list[str]:
    """The problem's numbered lines, from the guest source's `; [n]` markers."""
    lines = re.findall(r"^\s+(.+?)\s*; \[(\d+)\]$", p.guest_source, re.M)
    assert [int(n) for _, n in lines] == list(range(1, len(lines) + 1))
    return [ins for ins, _ in lines]


def test_ept_walk_against_a_plain_walk_of_the_generated_tables(problems):
    cases = [problems["ept_walk", s] for s in SEEDS]
    cases += [generate("ept_walk", s, {"large_page": True}) for s in SEEDS[:6]]
    for p in cases:
        s = p.seed
        mem = _stores(p.guest_source)
        cr3 = int(re.search(r"mov eax, 0x([0-9A-F]+)\n\s+mov cr3, eax", p.guest_source)[1], 16)
        la = int(re.search(r"mov ebx, \[0x([0-9A-F]+)\]", p.guest_source)[1], 16)
        pde_addr = (cr3 & 0xFFFFF000) | (la >> 22) << 2            # SDM 4.3, 32-bit paging
        pde = mem[pde_addr]
        assert pde & 1
        assert bool(pde & 0x80) == p.params["large_page"]
        if pde & 0x80:  # CR4.PSE = 1 and PS: a 4 MiB page, one guest level
            gpa, levels = (pde & 0xFFC00000) | (la & 0x3FFFFF), 1
            assert "pte_gpa" not in p.answers
        else:
            pte_addr = (pde & 0xFFFFF000) | ((la >> 12) & 0x3FF) << 2
            pte = mem[pte_addr]
            assert pte & 1 and p.answers["pte_gpa"] == pte_addr
            gpa, levels = (pte & 0xFFFFF000) | (la & 0xFFF), 2
        assert (p.answers["pde_gpa"], p.answers["gpa"]) == (pde_addr, gpa), s
        assert p.answers["hpa"] & 0xFFF == gpa & 0xFFF             # EPT keeps the page offset
        # n guest levels, m EPT levels: (n + 1)(m + 1) - 1 paging-structure references
        assert p.answers["references"] == (levels + 1) * (4 + 1) - 1 == {2: 14, 1: 9}[levels]


IO = re.compile(r"(in|out) (?:(al|ax|eax), (dx|0x[0-9A-F]+)|(dx|0x[0-9A-F]+), (al|ax|eax))$")
PIC_PORTS = {0x20, 0x21, 0xA0, 0xA1}  # kvm.ko's in-kernel PIC (irqchip kernel)
REGS = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")  # the SDM's GPR numbers


def test_exit_prediction_io_lines_against_the_sdm_layout(problems):
    seen_io = seen_alu = seen_cr = seen_mem = 0
    for s in SEEDS:
        p = problems["exit_prediction", s]
        dx = None
        exits, user = _nums(p.answers["exits"]), _nums(p.answers["userspace"])
        listing = _listing(p)
        touched: set[int] = set()  # pages EPT maps by now (the guest's code page aside)
        for n, ins in enumerate(listing, 1):
            if m := re.fullmatch(r"mov dx, (0x[0-9A-F]+)", ins):
                dx = int(m[1], 16)
            if m := IO.fullmatch(ins):
                inn = m[1] == "in"
                reg, port = (m[2], m[3]) if inn else (m[5], m[4])
                imm = port != "dx"
                port = int(port, 16) if imm else dx
                size = {"al": 1, "ax": 2, "eax": 4}[reg]
                # SDM "Exit Qualification for I/O Instructions"
                qual = (size - 1) | inn << 3 | imm << 6 | port << 16
                assert (p.answers[f"reason_{n}"], p.answers[f"qual_{n}"]) == (30, qual), (s, n, ins)
                assert n in exits and (n in user) == (port not in PIC_PORTS), (s, n, ins)
                seen_io += 1
            elif m := re.fullmatch(r"mov cr([034]), (e[a-z]x|esi|edi)", ins):
                # SDM "Exit Qualification for Control-Register Accesses": CR number, type 0
                # (MOV to CR), the register's number in bits 11:8. An exit only for a bit
                # KVM keeps: CR4.PSE and CR0.MP; never CR0.TS or (with EPT) CR0.WP or CR3
                cr, reg = int(m[1]), REGS.index(m[2])
                bit = int(re.search(r"xor \w+, (0x[0-9A-F]+)", listing[n - 2])[1], 16) if cr != 3 else 0
                exits_here = cr == 4 or (cr == 0 and bit == 0x2)
                want = (28, cr | reg << 8) if exits_here else (-1, 0)
                assert (p.answers[f"reason_{n}"], p.answers[f"qual_{n}"]) == want, (s, n, ins)
                seen_cr += 1
            elif m := re.fullmatch(r"mov (dword|byte) \[(0x[0-9A-F]+)\], 0x[0-9A-F]+", ins):
                # SDM "Exit Qualification for EPT Violations": bit 1 a write, bits 5:3 = 0 (not
                # present), bit 7 the linear address is valid, bit 8 it is the final translation
                page = int(m[2], 16) >> 12
                vga = m[1] == "byte"
                if page not in touched:
                    want = (48, 1 << 1 | 1 << 7 | 1 << 8)
                elif vga:  # KVM left an MMIO (misconfigured) entry: its fast path
                    want = (49, 0)
                else:
                    want = (-1, 0)
                assert (p.answers[f"reason_{n}"], p.answers[f"qual_{n}"]) == want, (s, n, ins)
                assert (n in user) == (vga and want[0] != -1), (s, n, ins)
                touched.add(page)
                seen_mem += 1
            elif m := re.fullmatch(r"mov e[a-z]+, \[(0x[0-9A-F]+)\]", ins):
                assert int(m[1], 16) >> 12 in touched and p.answers[f"reason_{n}"] == -1, (s, n, ins)
            elif ins == "cpuid":
                assert p.answers[f"reason_{n}"] == 10 and n in exits and n not in user
            elif re.fullmatch(r"(mov|add|xor|inc) (eax|ebx|ecx|esi|edi|dx|al)(, (\w+|0x[0-9A-F]+))?", ins) \
                    and "cr" not in ins:  # register and immediate operands only: no exit
                assert p.answers[f"reason_{n}"] == -1 and n not in exits, (s, n, ins)
                seen_alu += 1
    assert seen_io >= 10 and seen_alu >= 10 and seen_cr >= 3 and seen_mem >= 5


def test_shadow_faults_against_kvms_shadow_paging_rules(problems):
    """KVM's shadow MMU as mmu.rst and paging_tmpl.h describe it (vmsim keeps one shadow
    page per guest table and never unsyncs), replayed on the tables the guest writes."""
    windows = 0
    for s in SEEDS:
        p = problems["shadow_faults", s]
        mem = _stores(p.guest_source)
        cr3 = int(re.search(r"mov eax, 0x([0-9A-F]+)\n\s+mov cr3, eax", p.guest_source)[1], 16)
        tables = {v & 0xFFFFF000 for a, v in mem.items() if cr3 < a < cr3 + 0x1000}
        state: dict[int, str] = {}  # linear page -> "ro" | "rw": its shadow entry
        frames: dict[int, int] = {}  # linear page -> the frame it maps
        shadowed: set[int] = set()  # guest page tables with a shadow page: write-protected
        faults, injected, new_pages, lines = 0, 0, 0, []
        for n, ins in enumerate(_listing(p), 1):
            m = re.fullmatch(r"mov (?:ebx, \[0x([0-9A-F]+)\]|\[0x([0-9A-F]+)\], ecx)", ins)
            write = m[2] is not None
            la = int(m[1] or m[2], 16)
            pde = mem.get(cr3 + 4 * (la >> 22), 0)
            pte = mem.get((pde & 0xFFFFF000) + 4 * ((la >> 12) & 0x3FF), 0) if pde & 1 else 0
            page, frame = la >> 12, pte & 0xFFFFF000
            if not pte & 1:  # the guest's own tables say no: the guest takes its #PF
                faults, injected = faults + 1, injected + 1
                lines.append(n)
                continue
            windows += frame in tables
            have = state.get(page)
            if write and frame in shadowed:  # write-protected: emulated, stays protected
                assert have != "rw"
                faults += 1
                lines.append(n)
                continue
            if have == "rw" or (have == "ro" and not write):
                continue
            faults += 1
            lines.append(n)
            pt = pde & 0xFFFFF000
            if pt not in shadowed:  # a new shadow page: write-protect what maps the table
                shadowed.add(pt)
                new_pages += 1
                for other, f in frames.items():
                    if f == pt and state[other] == "rw":
                        state[other] = "ro"
            # writable only once the guest PTE is dirty (a write fault dirties it) and the
            # frame is no shadowed table; CR0.WP = 0, so R/W does not matter at CPL 0
            state[page] = "rw" if (write or pte & 0x40) and frame not in shadowed else "ro"
            frames[page] = frame
        expected = {"pf_exits": faults, "fixed": faults - injected, "injected": injected,
                    "shadow_pages": new_pages, "fault_lines": ", ".join(map(str, lines)) or "none"}
        assert {k: p.answers[k] for k in expected} == expected, s
    assert windows >= 5  # the page-table writes were exercised


def test_generated_guests_assemble_as_nasm_does(problems):
    nasm = shutil.which("nasm")
    if nasm is None:
        pytest.skip("nasm is not installed (Debian package nasm)")
    from vmsim.asm import assemble

    with tempfile.TemporaryDirectory() as tmp:
        for gen in GENERATORS:
            for s in SEEDS[:4]:
                src = Path(tmp) / "g.asm"
                src.write_text(problems[gen, s].guest_source)
                r = subprocess.run([nasm, "-f", "bin", "-o", f"{tmp}/g.bin", str(src)],
                                   capture_output=True, text=True, check=False)
                assert r.returncode == 0, r.stderr
                assert Path(f"{tmp}/g.bin").read_bytes() == assemble(src.read_text()).data


def test_generated_guests_on_qemu(problems):
    """On a real x86 CPU model (QEMU's TCG): the ept_walk guest reads its data back, and the
    shadow_faults guest's own #PF handler runs as often as the problem says (the exit
    status is (count << 1) | 1)."""
    qemu, nasm = shutil.which("qemu-system-i386"), shutil.which("nasm")
    if qemu is None or nasm is None:
        pytest.skip("needs qemu-system-i386 and nasm")
    cases = [(g, s) for g in GENERATORS for s in SEEDS[:2]]
    with tempfile.TemporaryDirectory() as tmp:
        for gen, s in cases:
            p = problems[gen, s]
            Path(tmp, "g.asm").write_text(p.guest_source)
            subprocess.run([nasm, "-f", "bin", "-o", f"{tmp}/g.bin", f"{tmp}/g.asm"], check=True)
            r = subprocess.run([qemu, "-M", "pc", "-m", "16", "-display", "none", "-nodefaults",
                                "-device", "VGA", "-device", "isa-debug-exit,iobase=0x501,iosize=1",
                                "-kernel", f"{tmp}/g.bin", "-no-reboot"],
                               capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
            want = (p.answers["injected"] << 1 | 1) if gen == "shadow_faults" else 1
            assert r.returncode == want, (gen, s, r.returncode, r.stderr)


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="no usable /dev/kvm on this host")
def test_exit_prediction_userspace_exits_on_the_host_kvm(problems):
    from vmsim.asm import assemble
    from vmsim.session import Session
    from vmsim.vmm.machine import MachineConfig

    for s in SEEDS[:8]:
        p = problems["exit_prediction", s]
        # The machine the problem states: the VGA window not coalesced
        s_ = Session(assemble(p.guest_source), "kvm", MachineConfig(coalesced_mmio=False),
                     history=False)
        seen = []
        s_.events.subscribe(seen.append, ["kvm_userspace_exit"])
        s_.run()
        got = [(e["reason"], e.fields.get("port", e.fields.get("phys_addr"))) for e in seen][:-1]
        lines = _listing(p)
        user = sorted(_nums(p.answers["userspace"]))
        want = []
        for n in user:
            ins = lines[n - 1]
            if m := re.fullmatch(r"mov byte \[(0x[0-9A-F]+)\], 0x[0-9A-F]+", ins):
                want.append(("KVM_EXIT_MMIO", int(m[1], 16)))
            else:
                assert IO.fullmatch(ins), ins
                port = re.search(r"(dx|0x[0-9A-F]+)", ins.split(" ", 1)[1])[1]
                dx = [int(x, 16) for x in re.findall(r"mov dx, (0x[0-9A-F]+)", "\n".join(lines[:n]))]
                want.append(("KVM_EXIT_IO", dx[-1] if port == "dx" else int(port, 16)))
        assert got == want, s


def test_same_problem_in_another_process():
    """No set or dict order leaks into a problem: another interpreter, with another hash
    seed, makes the same bytes."""
    import json
    import sys

    code = ("import json; from vmsim.lessons.practice import generate as g; print(json.dumps("
            "[[p.prompt, p.answers, p.solution, p.guest_source] for p in "
            "(g('ept_walk', 5), g('exit_prediction', 5), g('shadow_faults', 5))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONHASHSEED="12345")).stdout
    here = [[p.prompt, p.answers, p.solution, p.guest_source]
            for p in (generate("ept_walk", 5), generate("exit_prediction", 5), generate("shadow_faults", 5))]
    assert json.loads(out) == json.loads(json.dumps(here))


def test_a_teacher_prints_a_problem(capsys):
    from vmsim.lessons.practice import main

    assert main(["ept_walk", "3", "--solution", "--lang", "zh-CN"]) == 0
    out = capsys.readouterr().out
    p = generate("ept_walk", 3)
    assert p.prompt["zh-CN"] in out and p.solution["zh-CN"] in out
    assert f"`references` = {p.answers['references']}" in out
    with pytest.raises(SystemExit) as e:
        main(["shadow_faults", "1", "--params", '{"accesses": 99}'])
    assert e.value.code == 2 and "'accesses' must be between 4 and 8" in capsys.readouterr().err
