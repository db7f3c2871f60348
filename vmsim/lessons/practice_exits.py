# ruff: noqa: RUF001 - Chinese text uses full-width punctuation
"""Practice "exit_prediction": which instructions of a short guest exit (lessons 4-6).

A random run of 5-10 lines drawn from a pool whose behaviour vmsim's simulated kvm.ko
models as Linux KVM does: port I/O to QEMU's devices, to the in-kernel PIC and to
unclaimed ports, CPUID, RDMSR/WRMSR of intercepted and passed-through MSRs, RDTSC, MOV
to and from CR3 (EPT: no exit) and CR4, writes to the VGA buffer (the first an EPT
violation, then EPT misconfigurations: KVM's MMIO fast path) and first writes to RAM
pages (EPT violations kvm.ko fixes). The answers come from the run's `kvm_exit`,
`kvm_handler` and `kvm_userspace_exit` events, attributed to lines by the exit's RIP.
"""

from __future__ import annotations

import random

from vmsim.lessons.practice import (
    EPILOGUE,
    PREAMBLE,
    Problem,
    Question,
    h,
    lines_set,
    md_table,
    run_guest,
    source_line,
    text,
    validate_params,
)

PARAMS = {
    "lines": (int, None, 5, 10),  # None: 5 to 10, drawn from the seed
}
REGS32 = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")  # SDM's GPR numbers


def _io(rng: random.Random, state: dict) -> list[str]:
    kind = rng.choice(("com1_out", "com1_in", "nobody_out", "nobody_in", "imm_out", "imm_in",
                       "pic_in", "pic_out", "post"))
    if kind == "com1_out":  # the 16550's scratch register: a byte it keeps
        return ["mov dx, 0x3FF", f"mov al, {h(rng.randrange(256), 2)}", "out dx, al"]
    if kind == "com1_in":
        return [f"mov dx, {rng.choice(('0x3FD', '0x3FF', '0x3FB'))}", "in al, dx"]
    if kind == "nobody_out":
        return ["mov dx, 0x2E0", f"out dx, {rng.choice(('al', 'ax', 'eax'))}"]
    if kind == "nobody_in":
        return ["mov dx, 0x2E0", f"in {rng.choice(('al', 'ax', 'eax'))}, dx"]
    if kind == "imm_out":
        return [f"out 0xE0, {rng.choice(('al', 'ax'))}"]
    if kind == "imm_in":
        return [f"in {rng.choice(('al', 'eax'))}, 0xE0"]
    if kind == "pic_in":
        return [f"in al, {rng.choice(('0x21', '0xA1'))}"]
    if kind == "pic_out":  # mask every IRQ: nothing changes for a guest with IF=0
        return ["mov al, 0xFF", f"out {rng.choice(('0x21', '0xA1'))}, al"]
    return ["out 0x80, al"]


def _cpuid(rng: random.Random, state: dict) -> list[str]:
    return [rng.choice(("xor eax, eax", "mov eax, 1")), "cpuid"]


def _msr(rng: random.Random, state: dict) -> list[str]:
    kind = rng.choice(("apicbase", "pat", "pat_rw", "sysenter", "tsc"))
    if kind == "apicbase":
        return ["mov ecx, 0x1B", "rdmsr"]
    if kind == "pat":
        return ["mov ecx, 0x277", "rdmsr"]
    if kind == "pat_rw":
        return ["mov ecx, 0x277", "rdmsr", "wrmsr"]
    if kind == "sysenter":
        return ["mov ecx, 0x174", "rdmsr"]
    return ["mov ecx, 0x10", "rdmsr"]


def _rdtsc(rng: random.Random, state: dict) -> list[str]:
    return ["rdtsc"]


def _cr(rng: random.Random, state: dict) -> list[str]:
    reg = rng.choice(("eax", "ebx", "ecx", "esi"))
    kind = rng.random()
    if kind < 0.3:
        return [f"mov {reg}, cr3", f"mov cr3, {reg}"]
    if kind < 0.6:  # toggles CR0.TS or CR0.WP (the guest's own bits) or CR0.MP (KVM's)
        return [f"mov {reg}, cr0", f"xor {reg}, {rng.choice(('0x8', '0x10000', '0x2'))}", f"mov cr0, {reg}"]
    return [f"mov {reg}, cr4", f"xor {reg}, 0x10", f"mov cr4, {reg}"]  # toggles CR4.PSE


def _vga(rng: random.Random, state: dict) -> list[str]:
    cell = 0xB8000 + 2 * rng.randrange(80 * 25)
    return [f"mov byte [{h(cell)}], {h(rng.randrange(0x21, 0x7F), 2)}"]


def _ram(rng: random.Random, state: dict) -> list[str]:
    pages = state["pages"]
    page = rng.choice(pages)
    addr = page + 4 * rng.randrange(1024)
    if page in state["written"] and rng.random() < 0.5:
        return [f"mov {rng.choice(('eax', 'ebx', 'esi'))}, [{h(addr)}]"]
    state["written"].add(page)  # the first access to a page is a write (see make)
    return [f"mov dword [{h(addr)}], {h(rng.randrange(1 << 32), 8)}"]


def _alu(rng: random.Random, state: dict) -> list[str]:
    r = rng.choice(("eax", "ebx", "esi", "edi"))
    return [rng.choice((f"add {r}, {rng.randrange(1, 100)}", f"xor {r}, {r}",
                        f"mov {r}, {h(rng.randrange(1 << 16))}", f"inc {r}"))]


POOL = [(_io, 5), (_cpuid, 2), (_msr, 3), (_rdtsc, 1), (_cr, 2), (_vga, 2), (_ram, 3), (_alu, 2)]


def draw_lines(seed: int, count: int | None) -> list[str]:
    rng = random.Random(f"exit_prediction:{seed}")
    target = count if count is not None else rng.randint(5, 10)
    gens, weights = zip(*POOL, strict=True)
    # two or three RAM pages between 2 and 16 MiB that nothing touched before
    state = {"pages": [g << 12 for g in rng.sample(range(0x200, 0x1000), rng.randint(2, 3))],
             "written": set()}
    lines: list[str] = []
    while len(lines) < target:
        written = set(state["written"])
        item = rng.choices(gens, weights)[0](rng, state)
        if len(lines) + len(item) <= target:
            lines += item
        else:  # not taken: a page it would have written stays unwritten
            state["written"] = written
    return lines


def guest_source(lines: list[str], seed: int) -> tuple[str, int]:
    """The guest, and the source line number of the problem's line 1."""
    head = f"; practice exit_prediction, seed {seed}: lines [1] .. [{len(lines)}]\n" + PREAMBLE
    first = head.count("\n") + 1
    body = "".join(f"        {ln:<32} ; [{n}]\n" for n, ln in enumerate(lines, 1))
    return head + body + "        mov al, 0\n" + EPILOGUE, first


REASON_ZH = {
    "IO_INSTRUCTION": "I/O 指令", "CPUID": "CPUID", "MSR_READ": "RDMSR", "MSR_WRITE": "WRMSR",
    "CR_ACCESS": "控制寄存器访问", "EPT_VIOLATION": "EPT violation", "EPT_MISCONFIG": "EPT misconfiguration",
}


def decode_qualification(reason: str, q: int, gpa: int | None, zh: bool) -> str:
    """The exit qualification in words, field by field (SDM "Exit Qualification for ...";
    virtualization-facts.md 1.3-1.5)."""
    if reason == "IO_INSTRUCTION":
        size, inn, string, rep, imm = (q & 7) + 1, q >> 3 & 1, q >> 4 & 1, q >> 5 & 1, q >> 6 & 1
        if zh:
            return (f"端口 {h(q >> 16)}，大小 {size}，{'IN' if inn else 'OUT'}，"
                    f"字符串 {string}，REP {rep}，{'立即数端口' if imm else '端口在 DX'}")
        return (f"port {h(q >> 16)}, size {size}, {'IN' if inn else 'OUT'}, string {string}, "
                f"REP {rep}, {'immediate port' if imm else 'port in DX'}")
    if reason == "CR_ACCESS":
        cr, typ, reg = q & 15, q >> 4 & 3, q >> 8 & 15
        how = ("MOV to CR", "MOV from CR", "CLTS", "LMSW")[typ]
        if zh:
            how = ("MOV 到 CR", "MOV 自 CR", "CLTS", "LMSW")[typ]
            return f"CR{cr}，{how}，通用寄存器 {REGS32[reg] if reg < 8 else reg}"
        return f"CR{cr}, {how}, register {REGS32[reg] if reg < 8 else reg}"
    if reason == "EPT_VIOLATION":
        acc = [w for b, w in ((0, "read"), (1, "write"), (2, "fetch")) if q >> b & 1]
        perm = [w for b, w in ((3, "R"), (4, "W"), (5, "X")) if q >> b & 1]
        if zh:
            acc_zh = {"read": "读", "write": "写", "fetch": "取指"}
            return (f"GPA {h(gpa or 0)}，{'/'.join(acc_zh[a] for a in acc)}访问，EPT 表项"
                    f"{'允许 ' + ''.join(perm) if perm else '不存在'}，线性地址有效 {q >> 7 & 1}，"
                    f"最终地址转换 {q >> 8 & 1}")
        return (f"GPA {h(gpa or 0)}, {'/'.join(acc)} access, EPT entry "
                f"{'allows ' + ''.join(perm) if perm else 'not present'}, linear address valid "
                f"{q >> 7 & 1}, final translation {q >> 8 & 1}")
    if reason == "EPT_MISCONFIG":
        return (f"GPA {h(gpa or 0)}（限定信息不用：GPA 见 GUEST_PHYSICAL_ADDRESS）" if zh else
                f"GPA {h(gpa or 0)} (no qualification: the GPA is in GUEST_PHYSICAL_ADDRESS)")
    return "不用（为 0）" if zh else "not used (0)"


def make(seed: int, params: dict) -> Problem:
    p = validate_params("exit_prediction", params, PARAMS)
    lines = draw_lines(seed, p["lines"])
    source, first = guest_source(lines, seed)
    # (Lessons 4-6: every VGA store reaches QEMU, as lesson 6's machine has it.)
    image, events, _ = run_guest(source, ["kvm_exit", "kvm_handler", "kvm_userspace_exit"],
                                 coalesced_mmio=False)
    exits: dict[int, dict] = {}
    current = None
    for e in events:
        if e.kind == "kvm_exit":
            src = source_line(image, e["guest_rip"])
            n = src - first + 1 if src is not None else 0
            current = None
            if 1 <= n <= len(lines):
                if n in exits:
                    raise RuntimeError(f"exit_prediction: line {n} exits twice")
                current = exits[n] = {"reason": e["exit_reason"], "number": e["exit_reason_number"],
                                      "qual": e["info1"], "gpa": e["guest_physical_address"],
                                      "handler": None, "userspace": None}
        elif current is not None and e.kind == "kvm_handler" and current["handler"] is None:
            current["handler"] = e["handler"]
        elif current is not None and e.kind == "kvm_userspace_exit":
            current["userspace"] = e["reason"]
    answers: dict[str, int | str] = {
        "exits": lines_set(exits),
        "userspace": lines_set(n for n, x in exits.items() if x["userspace"]),
    }
    questions = [
        Question("exits", text("Which lines cause a VM exit? (line numbers, e.g. \"2, 5\"; \"none\")",
                               "哪些行引起虚拟机退出？（行号，如 \"2, 5\"；没有则填 \"none\"）"), "text"),
        Question("userspace", text("Which lines' exits go out to QEMU (KVM_RUN returns, a KVM_EXIT_*)?",
                                   "哪些行的退出到达 QEMU（KVM_RUN 返回，KVM_EXIT_*）？"), "text"),
    ]
    for n in range(1, len(lines) + 1):
        x = exits.get(n)
        answers[f"reason_{n}"] = x["number"] if x else -1
        answers[f"qual_{n}"] = x["qual"] if x else 0
        questions.append(Question(f"reason_{n}", text(
            f"Line {n}: basic exit reason (number; -1 if it does not exit)",
            f"第 {n} 行：基本退出原因（编号；不退出则填 -1）"), "int"))
        questions.append(Question(f"qual_{n}", text(
            f"Line {n}: exit qualification (hex; 0 if it does not exit)",
            f"第 {n} 行：退出限定信息（exit qualification，十六进制；不退出则填 0）"), "hex"))
    return Problem("exit_prediction", seed, _prompt(lines, seed), questions, answers,
                   _solution(lines, exits, answers), source, p)


def _listing(lines: list[str]) -> str:
    return "```nasm\n" + "".join(f"{ln:<32} ; [{n}]\n" for n, ln in enumerate(lines, 1)) + "```"


def _prompt(lines: list[str], seed: int) -> dict[str, str]:
    en = (f"**Which instructions exit?** (seed {seed})\n\n"
          "A 32-bit guest (protected mode, paging off, interrupts off) runs on the simulated "
          "kvm.ko with EPT and the in-kernel irqchip (the PIC and the PIT are in kvm.ko). "
          "QEMU has a 16550 UART at ports 0x3F8-0x3FF, isa-debug-exit at 0x501 and the VGA "
          "text buffer at 0xB8000 (MMIO, not coalesced: as lesson 6's machine, "
          "--no-coalesced-mmio); no device model claims ports 0x80, 0xE0 or 0x2E0 "
          "(QEMU's pc machine has a dummy at 0x80). Before "
          "line 1 the guest has only run from its own code page: no RAM page above 2 MiB and "
          "no VGA memory has been touched yet, and CR4 is 0. kvm.ko's EPT maps guest RAM one "
          "4 KiB page per EPT violation (no huge pages).\n\n"
          f"{_listing(lines)}\n\n"
          "For every line: does it cause a VM exit, with which basic exit reason (the number: "
          "SDM Appendix C) and which exit qualification? Which of these exits does kvm.ko "
          "hand to QEMU (KVM_RUN returns with a KVM_EXIT_*)?")
    zh = (f"**哪些指令会退出？**（种子 {seed}）\n\n"
          "一个 32 位客户机（保护模式，未开分页，关中断）在模拟的 kvm.ko 上运行，使用 EPT 与内核中的"
          "中断控制器（PIC 与 PIT 在 kvm.ko 中）。QEMU 在端口 0x3F8-0x3FF 上有一个 16550 串口，"
          "在 0x501 上有 isa-debug-exit，在 0xB8000 有 VGA 文本缓冲区（MMIO，不合并：与第 6 课的机器相同，"
          "--no-coalesced-mmio）；端口 0x80、0xE0 "
          "和 0x2E0 上没有设备模型（QEMU 的 pc 机型在 0x80 上有一个空设备）。"
          "第 1 行之前客户机只在自己的代码页中运行过：2 MiB 以上的内存页和 "
          "VGA 内存都还没被访问过，CR4 为 0。kvm.ko 的 EPT 每次 EPT violation 只映射一个 4 KiB "
          "的客户机内存页（不用大页）。\n\n"
          f"{_listing(lines)}\n\n"
          "对每一行：它是否引起虚拟机退出？基本退出原因是什么（编号：SDM 附录 C）？退出限定信息"
          "（exit qualification）是多少？其中哪些退出会被 kvm.ko 交给 QEMU（KVM_RUN 返回 "
          "KVM_EXIT_*）？")
    return text(en, zh)


def _solution(lines: list[str], exits: dict[int, dict], answers: dict) -> dict[str, str]:
    rows_en, rows_zh = [], []
    for n, ln in enumerate(lines, 1):
        x = exits.get(n)
        if x is None:
            rows_en.append([str(n), f"`{ln}`", "no", "", "", "", ""])
            rows_zh.append([str(n), f"`{ln}`", "否", "", "", "", ""])
            continue
        where_en = (f"QEMU ({x['userspace']})" if x["userspace"] else f"kvm.ko (`{x['handler']}`)")
        where_zh = (f"QEMU（{x['userspace']}）" if x["userspace"] else f"kvm.ko（`{x['handler']}`）")
        reason = f"{x['number']} {x['reason']}"
        rows_en.append([str(n), f"`{ln}`", "yes", reason, h(x["qual"], 8),
                        decode_qualification(x["reason"], x["qual"], x["gpa"], False), where_en])
        rows_zh.append([str(n), f"`{ln}`", "是", reason, h(x["qual"], 8),
                        decode_qualification(x["reason"], x["qual"], x["gpa"], True), where_zh])
    t_en = md_table(["line", "instruction", "exits?", "reason", "qualification", "decoded",
                     "handled by"], rows_en)
    t_zh = md_table(["行", "指令", "退出？", "退出原因", "限定信息", "解读", "处理者"], rows_zh)
    en = (f"Lines that exit: **{answers['exits']}**; out to QEMU: **{answers['userspace']}**.\n\n"
          f"{t_en}\n\n"
          "Why:\n"
          "- kvm.ko sets unconditional I/O exiting: every IN and OUT exits (reason 30). The "
          "qualification is the port in bits 31:16, bit 6 for an immediate port, bit 3 for IN, "
          "bits 2:0 the size − 1. The PIC (0x20/0x21, 0xA0/0xA1) is in kvm.ko: handled there; "
          "every other port goes to QEMU as KVM_EXIT_IO, claimed by a device or not.\n"
          "- CPUID always exits (10) and kvm.ko answers it. RDMSR/WRMSR exit (31/32) only for "
          "MSRs the MSR bitmap intercepts (IA32_APIC_BASE 0x1B, IA32_PAT 0x277); KVM lets "
          "IA32_TSC (0x10) reads and the SYSENTER MSRs (0x174-0x176) through, and uses TSC "
          "offsetting, so RDTSC does not exit.\n"
          "- With EPT the guest owns CR3: MOV to and from CR3 do not exit. A MOV from CR0 or CR4 "
          "never exits (the read shadows answer). A MOV to CR0 or CR4 exits (28; qualification: "
          "CR number, access type in bits 5:4, register in bits 11:8) when it changes a bit KVM "
          "keeps (the guest/host masks): CR4.PSE and CR0.MP are KVM's; CR0.TS and, with EPT, "
          "CR0.WP are the guest's own.\n"
          "- The first write to a RAM page is an EPT violation (48; write bit 1, bits 5:3 = 0: "
          "not present) that kvm.ko fixes by mapping the page; later accesses to it do not exit. "
          "The first access to the VGA page is an EPT violation too, after which kvm.ko leaves a "
          "deliberately misconfigured entry there: every later access is an EPT misconfiguration "
          "(49), its fast MMIO path. Both go out as KVM_EXIT_MMIO.\n"
          "- mov, add, xor, inc: no exit.\n")
    zh = (f"引起退出的行：**{answers['exits']}**；到达 QEMU 的：**{answers['userspace']}**。\n\n"
          f"{t_zh}\n\n"
          "原因：\n"
          "- kvm.ko 设置了无条件 I/O 退出：每条 IN 和 OUT 都会退出（原因 30）。限定信息的 31:16 "
          "位是端口，第 6 位表示立即数端口，第 3 位表示 IN，2:0 位是大小减 1。PIC（0x20/0x21、"
          "0xA0/0xA1）在 kvm.ko 中，由它处理；其他端口不论有没有设备，都以 KVM_EXIT_IO 交给 QEMU。\n"
          "- CPUID 总会退出（10），由 kvm.ko 应答。RDMSR/WRMSR 只在 MSR 位图拦截该 MSR 时退出"
          "（31/32：IA32_APIC_BASE 0x1B、IA32_PAT 0x277）；KVM 放行 IA32_TSC（0x10）的读取和 "
          "SYSENTER 系列 MSR（0x174-0x176），并使用 TSC 偏移，所以 RDTSC 不退出。\n"
          "- 有了 EPT，CR3 归客户机所有：MOV 到/自 CR3 不退出。MOV 自 CR0 或 CR4 从不退出（由 read "
          "shadow 应答）。MOV 到 CR0 或 CR4 若改变了 KVM 保留的位（guest/host mask）就会退出（28；"
          "限定信息为 CR 编号、5:4 位访问类型、11:8 位寄存器）：CR4.PSE 与 CR0.MP 归 KVM；CR0.TS "
          "以及有 EPT 时的 CR0.WP 归客户机。\n"
          "- 第一次写某个内存页是一次 EPT violation（48；第 1 位为写，5:3 位为 0：表项不存在），"
          "kvm.ko 映射该页后恢复客户机；之后访问它不再退出。第一次访问 VGA 页也是 EPT violation，"
          "之后 kvm.ko 在那里故意留下一个配置错误的表项：之后每次访问都是 EPT misconfiguration"
          "（49），即它的 MMIO 快速路径。两者都以 KVM_EXIT_MMIO 交给 QEMU。\n"
          "- mov、add、xor、inc：不退出。\n")
    return text(en, zh)
