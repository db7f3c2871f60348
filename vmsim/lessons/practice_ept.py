# ruff: noqa: RUF001 - Chinese text uses full-width punctuation
"""Practice "ept_walk": a two-dimensional page walk by hand (lesson 9).

A random 32-bit (non-PAE, two-level) guest page table, in guest memory, and a random
linear address it maps with a 4 KiB page. The guest writes the tables, loads CR3, turns
paging on and reads the address once: a TLB miss, so the hardware walks the guest's
tables (linear -> guest-physical) and, for every guest-physical address on the way, the
EPT (guest-physical -> host-physical). The answers are read from that walk's `ept_step`
and `walk_step` events (docs/trace-format.md), which the guest's read emits after its
`tlb_miss`.
"""

from __future__ import annotations

import random

from vmsim.lessons.practice import (
    EPILOGUE,
    PREAMBLE,
    Problem,
    Question,
    h,
    md_table,
    run_guest,
    text,
    validate_params,
)

PARAMS = {
    # entries shown in each table (the walked one and entries - 1 others)
    "entries": (int, 3, 1, 6),
    # the walked PDE maps a 4 MiB page (PS = 1): one guest level, 9 references
    "large_page": (bool, False, None, None),
}
MAGIC = 0x600DDA7A
FIRST_GFN, LAST_GFN = 0x200, 0xFFF  # 2 MiB .. 16 MiB: above the guest, in its 16 MiB of RAM


def _flags(rng: random.Random, leaf: bool) -> int:
    """P, and R/W, U/S, A (and D in a PTE) at random; never PS (bit 7) in a PDE."""
    f = 0x001 | rng.choice((0, 0x002)) | rng.choice((0, 0x004)) | rng.choice((0, 0x020))
    if leaf:
        f |= rng.choice((0, 0x040))
    return f


def layout(seed: int, entries: int, large: bool = False) -> dict:
    """The problem's tables, drawn from the seed: CR3, the PD's and PT's shown entries,
    the linear address and the value at it."""
    rng = random.Random(f"ept_walk:{seed}")
    gfns = rng.sample(range(FIRST_GFN, LAST_GFN + 1), 2 + 2 * entries)
    pd, pt, frame = gfns[0] << 12, gfns[1] << 12, gfns[2] << 12
    others = [g << 12 for g in gfns[3:]]
    pdi = rng.randrange(1, 1024)  # PD[0] maps the guest itself (a 4 MiB page)
    pti = rng.randrange(0, 1024)
    offset = rng.randrange(0, 0x1000, 4)
    linear = (pdi << 22) | (pti << 12) | offset

    def neighbours(index: int, taken: set[int], low: int) -> list[int]:
        picks = []
        near = [i for i in (index - 1, index + 1, index - 2, index + 2) if low <= i < 1024]
        rng.shuffle(near)
        while len(picks) < entries - 1:
            i = near.pop() if near and rng.random() < 0.6 else rng.randrange(low, 1024)
            if i not in taken:
                taken.add(i)
                picks.append(i)
        return picks

    pde = {0: 0x00000083}  # 4 MiB page, present, writable: identity for 0..4 MiB
    pde[pdi] = pt | _flags(rng, False)
    for i in neighbours(pdi, {0, pdi}, 1):
        pde[i] = others.pop() | _flags(rng, False)
    pte = {pti: frame | _flags(rng, True)}
    for i in neighbours(pti, {pti}, 0):
        pte[i] = others.pop() | _flags(rng, True)
    if large:  # drawn after the rest: a seed's 4 KiB problem stays what it was
        low = linear & 0x3FFFFF
        big = rng.choice([b for b in (0x400000, 0x800000, 0xC00000)
                          if (b + low) >> 12 not in (pd >> 12, pt >> 12)])
        pde[pdi] = big | 0x080 | _flags(rng, False)
        shown = [i for i in pde if i not in (0, pdi)]
        if shown:  # the page table hangs off another PDE now
            j = rng.choice(shown)
            pde[j] = pt | (pde[j] & 0xFFF)
        else:
            pte = {}
        frame, offset = (big + low) & ~0xFFF, low & 0xFFF
    return {"cr3": pd, "pt": pt, "frame": frame, "linear": linear, "offset": offset,
            "pde": dict(sorted(pde.items())), "pte": dict(sorted(pte.items())), "large": large}


def guest_source(lay: dict, seed: int) -> str:
    pd, pt = lay["cr3"], lay["pt"]
    lines = [f"; practice ept_walk, seed {seed}: a two-level guest page table, then one read",
             PREAMBLE,
             "        mov eax, cr4",
             "        or eax, 0x10                    ; CR4.PSE: PD[0] is a 4 MiB page",
             "        mov cr4, eax"]
    for i, v in lay["pde"].items():
        lines.append(f"        mov dword [{h(pd + 4 * i)}], {h(v, 8)}   ; PD[{i}]")
    for i, v in lay["pte"].items():
        lines.append(f"        mov dword [{h(pt + 4 * i)}], {h(v, 8)}   ; PT[{i}]")
    data = lay["frame"] + lay["offset"]
    lines += [
        f"        mov dword [{h(data)}], {h(MAGIC)}   ; the data (this write also has EPT map its page)",
        f"        mov eax, {h(pd)}",
        "        mov cr3, eax                    ; CR3: the page directory",
        "        mov eax, cr0",
        "        or eax, 0x80000000",
        "        mov cr0, eax                    ; CR0.PG: paging on (the TLB starts empty)",
        f"        mov ebx, [{h(lay['linear'])}]   ; the read: a TLB miss, a two-dimensional walk",
        "        xor eax, eax",
        f"        cmp ebx, {h(MAGIC)}",
        "        je exit                         ; status 0: the read found the data",
        "        mov al, 1",
        "        jmp exit",
        EPILOGUE]
    return "\n".join(lines)


QUESTIONS = [
    Question("pde_gpa", text("Guest-physical address of the PDE the walk reads (hex)",
                             "页表遍历读取的 PDE（页目录项）的客户机物理地址（十六进制）"), "hex"),
    Question("pte_gpa", text("Guest-physical address of the PTE the walk reads (hex)",
                             "页表遍历读取的 PTE（页表项）的客户机物理地址（十六进制）"), "hex"),
    Question("gpa", text("Guest-physical address the linear address translates to (hex)",
                         "该线性地址转换得到的客户机物理地址（十六进制）"), "hex"),
    Question("hpa", text("Host-physical address of the data, from the EPT (hex)",
                         "经 EPT 转换后数据的宿主机物理地址（十六进制）"), "hex"),
    Question("references", text("Memory references of the whole two-dimensional walk on this "
                                "TLB miss (guest and EPT paging-structure entries; the data "
                                "read itself not counted)",
                                "这次 TLB 未命中时二维页表遍历的内存访问次数（客户机页表项与 EPT "
                                "表项都算；数据本身的读取不算）"), "int"),
]


def _walk(events: list, linear: int) -> list:
    """The last walk of `linear`: its ept_step and walk_step events after its last tlb_miss."""
    start = max(i for i, e in enumerate(events) if e.kind == "tlb_miss" and e["linear"] == linear)
    walk = [e for e in events[start + 1:] if e.kind in ("ept_step", "walk_step")
            and e["linear"] == linear]
    if not walk or walk[-1].kind != "ept_step" or walk[-1]["outcome"] != "4K page":
        raise RuntimeError("ept_walk: the walk did not end in a mapped 4 KiB page")
    return walk


def make(seed: int, params: dict) -> Problem:
    p = validate_params("ept_walk", params, PARAMS)
    lay = layout(seed, p["entries"], p["large_page"])
    source = guest_source(lay, seed)
    _, events, outcome = run_guest(source, ["tlb_miss", "ept_step", "walk_step"], paging="ept")
    if outcome.exit_status != 1:  # isa-debug-exit status (0 << 1) | 1: the data was found
        raise RuntimeError("ept_walk: the guest did not read its data back")
    walk = _walk(events, lay["linear"])
    guest_steps = [e for e in walk if e.kind == "walk_step"]
    pde_ev = next(e for e in guest_steps if e["level"] == "PDE")
    pte_ev = next((e for e in guest_steps if e["level"] == "PTE"), None)
    final = walk[-1]
    gpa = final["gpa"]
    hpa = (final["entry"] & 0x000FFFFFFFFFF000) | (gpa & 0xFFF)
    found = {"pde_gpa": pde_ev["entry_address"], "gpa": gpa, "hpa": hpa, "references": len(walk)}
    if pte_ev is not None:
        found["pte_gpa"] = pte_ev["entry_address"]
    questions = [q for q in QUESTIONS if q.id in found]
    answers = {q.id: found[q.id] for q in questions}
    return Problem("ept_walk", seed, _prompt(lay, seed), questions, answers,
                   _solution(lay, walk, answers), source, p)


def _tables_md(lay: dict, zh: bool) -> str:
    pd, pt = lay["cr3"], lay["pt"]
    idx, addr, val, note = (("索引", "表项地址（客户机物理）", "值", "说明") if zh else
                            ("index", "entry address (guest-physical)", "value", "note"))
    rows = []
    for i, v in lay["pde"].items():
        n = "" if i else ("4 MiB 页，恒等映射（客户机代码与栈）" if zh else
                          "4 MiB page, identity (the guest's code and stack)")
        rows.append([str(i), h(pd + 4 * i, 8), h(v, 8), n])
    pd_md = md_table([idx, addr, val, note], rows)
    pt_md = md_table([idx, addr, val],
                     [[str(i), h(pt + 4 * i, 8), h(v, 8)] for i, v in lay["pte"].items()])
    if zh:
        return (f"页目录（CR3 = `{h(pd, 8)}`），非零表项：\n\n{pd_md}\n\n" +
                (f"位于 `{h(pt, 8)}` 的页表，非零表项：\n\n{pt_md}\n" if lay["pte"] else ""))
    return (f"Page directory (CR3 = `{h(pd, 8)}`), its non-zero entries:\n\n{pd_md}\n\n" +
            (f"The page table at `{h(pt, 8)}`, its non-zero entries:\n\n{pt_md}\n" if lay["pte"] else ""))


def _prompt(lay: dict, seed: int) -> dict[str, str]:
    la = h(lay["linear"], 8)
    en = (f"**Two-dimensional page walk** (seed {seed})\n\n"
          "A 32-bit guest (two-level paging, no PAE, CR4.PSE=1) runs under EPT with the "
          "simulated kvm.ko. It has built these tables in its memory (every other entry is 0):\n\n"
          f"{_tables_md(lay, False)}\n"
          f"It loads CR3, turns paging on (the TLB is empty) and reads the 4 bytes at linear "
          f"address `{la}`. Before turning paging on it wrote to every page involved, so EPT "
          "already maps them all: this walk causes no EPT violation. EPT has four levels "
          "(PML4E, PDPTE, PDE, PTE).\n\n"
          "Linear address bits: 31:22 PDE index, 21:12 PTE index, 11:0 offset; a PDE or PTE "
          "is 4 bytes; an entry's bits 31:12 give the next table or the page frame, except in "
          "a PDE with bit 7 (PS) set, which maps a 4 MiB page: bits 31:22 are its frame and "
          "bits 21:0 of the linear address the offset.")
    zh = (f"**二维页表遍历**（种子 {seed}）\n\n"
          "一个 32 位客户机（两级分页，无 PAE，CR4.PSE=1）在模拟的 kvm.ko 上以 EPT 运行。"
          "它在自己的内存中建立了如下页表（其余表项均为 0）：\n\n"
          f"{_tables_md(lay, True)}\n"
          f"它加载 CR3、开启分页（TLB 为空），然后读取线性地址 `{la}` 处的 4 个字节。"
          "开启分页之前它已写过所涉及的每一页，所以 EPT 已映射了它们：这次遍历不会引起 EPT "
          "violation。EPT 有四级（PML4E、PDPTE、PDE、PTE）。\n\n"
          "线性地址各位：31:22 为 PDE 索引，21:12 为 PTE 索引，11:0 为页内偏移；PDE 与 PTE "
          "各 4 字节；表项的 31:12 位给出下一级页表或页帧的地址，但第 7 位（PS）置位的 PDE 映射一个 "
          "4 MiB 页：其 31:22 位是页帧，线性地址的 21:0 位是页内偏移。")
    return text(en, zh)


def _solution(lay: dict, walk: list, ans: dict) -> dict[str, str]:
    la = lay["linear"]
    pdi, pti, off = la >> 22, (la >> 12) & 0x3FF, la & 0xFFF
    rows_en, rows_zh = [], []
    for n, e in enumerate(walk, 1):
        if e.kind == "ept_step":
            what_en = f"EPT {e['level']}[{e['index']}] for GPA {h(e['gpa'], 8)}"
            what_zh = f"EPT {e['level']}[{e['index']}]，翻译 GPA {h(e['gpa'], 8)}"
            where_en = where_zh = f"{h(e['entry_address'], 8)} (HPA)"
        else:
            what_en = f"guest {e['level']}[{e['index']}]"
            what_zh = f"客户机 {e['level']}[{e['index']}]"
            where_en = where_zh = f"{h(e['entry_address'], 8)} (GPA)"
        rows_en.append([str(n), what_en, where_en, h(e["entry"], 8), e["outcome"]])
        rows_zh.append([str(n), what_zh, where_zh, h(e["entry"], 8), e["outcome"]])
    t_en = md_table(["#", "reference", "entry address", "entry", "outcome"], rows_en)
    t_zh = md_table(["#", "访问", "表项地址", "表项", "结果"], rows_zh)
    pde_v = lay["pde"][pdi]
    n_ept = sum(e.kind == "ept_step" for e in walk)
    n_g = len(walk) - n_ept
    if lay["large"]:
        steps_en = (f"Linear `{h(la, 8)}` = PDE index {pdi} ({h(pdi)}), offset in a 4 MiB page "
                    f"{h(la & 0x3FFFFF)}.\n\n"
                    f"- PDE at CR3 + 4 × {pdi} = {h(lay['cr3'], 8)} + {h(4 * pdi)} = "
                    f"**{h(ans['pde_gpa'], 8)}** (guest-physical); it holds {h(pde_v, 8)}: PS = 1, "
                    f"a 4 MiB page at {h(pde_v & 0xFFC00000, 8)}, no PTE.\n"
                    f"- Guest-physical address = frame + offset = **{h(ans['gpa'], 8)}**.\n")
        steps_zh = (f"线性地址 `{h(la, 8)}` = PDE 索引 {pdi}（{h(pdi)}），4 MiB 页内偏移 "
                    f"{h(la & 0x3FFFFF)}。\n\n"
                    f"- PDE 位于 CR3 + 4 × {pdi} = {h(lay['cr3'], 8)} + {h(4 * pdi)} = "
                    f"**{h(ans['pde_gpa'], 8)}**（客户机物理地址）；其值 {h(pde_v, 8)}：PS = 1，"
                    f"位于 {h(pde_v & 0xFFC00000, 8)} 的 4 MiB 页，没有 PTE。\n"
                    f"- 客户机物理地址 = 页帧 + 偏移 = **{h(ans['gpa'], 8)}**。\n")
        formula, native = "1 × (4 + 1) + 4 = (1 + 1)(4 + 1) − 1", 1
    else:
        pte_v = lay["pte"][pti]
        steps_en = (f"Linear `{h(la, 8)}` = PDE index {pdi} ({h(pdi)}), PTE index {pti} ({h(pti)}), "
                    f"offset {h(off)}.\n\n"
                    f"- PDE at CR3 + 4 × {pdi} = {h(lay['cr3'], 8)} + {h(4 * pdi)} = "
                    f"**{h(ans['pde_gpa'], 8)}** (guest-physical); it holds {h(pde_v, 8)}: page "
                    f"table at {h(pde_v & 0xFFFFF000, 8)}.\n"
                    f"- PTE at {h(pde_v & 0xFFFFF000, 8)} + 4 × {pti} = **{h(ans['pte_gpa'], 8)}**; "
                    f"it holds {h(pte_v, 8)}: page frame {h(pte_v & 0xFFFFF000, 8)}.\n"
                    f"- Guest-physical address = frame + offset = **{h(ans['gpa'], 8)}**.\n")
        steps_zh = (f"线性地址 `{h(la, 8)}` = PDE 索引 {pdi}（{h(pdi)}），PTE 索引 {pti}（{h(pti)}），"
                    f"偏移 {h(off)}。\n\n"
                    f"- PDE 位于 CR3 + 4 × {pdi} = {h(lay['cr3'], 8)} + {h(4 * pdi)} = "
                    f"**{h(ans['pde_gpa'], 8)}**（客户机物理地址）；其值 {h(pde_v, 8)}：页表在 "
                    f"{h(pde_v & 0xFFFFF000, 8)}。\n"
                    f"- PTE 位于 {h(pde_v & 0xFFFFF000, 8)} + 4 × {pti} = **{h(ans['pte_gpa'], 8)}**；"
                    f"其值 {h(pte_v, 8)}：页帧 {h(pte_v & 0xFFFFF000, 8)}。\n"
                    f"- 客户机物理地址 = 页帧 + 偏移 = **{h(ans['gpa'], 8)}**。\n")
        formula, native = "2 × (4 + 1) + 4 = (2 + 1)(4 + 1) − 1", 2
    en = (steps_en +
          f"- The EPT's leaf entry for it gives host frame "
          f"{h(ans['hpa'] & ~0xFFF, 8)}: host-physical **{h(ans['hpa'], 8)}** (vmsim's kvm.ko "
          "backs guest RAM one to one: its `tdp_map` events show hpa = gfn << 12).\n"
          f"- Every guest-physical address the walk uses (each guest entry's and the data's) "
          f"needs its own 4-step EPT walk: {n_g} guest reference{'s' if n_g > 1 else ''} + "
          f"{n_ept} EPT references = "
          f"**{ans['references']}** = {formula}. Natively it would be {native}.\n\n"
          "The walk as the simulated hardware reported it (`ept_step` and `walk_step` events, in "
          "order; entries as the walk left them, with the accessed bit, A = bit 5 in a guest entry, "
          "set):\n\n"
          f"{t_en}\n")
    zh = (steps_zh +
          f"- EPT 的末级表项给出宿主机页帧 {h(ans['hpa'] & ~0xFFF, 8)}：宿主机物理地址 "
          f"**{h(ans['hpa'], 8)}**（vmsim 的 kvm.ko 以一一对应的方式提供客户机内存：`tdp_map` "
          "事件中 hpa = gfn << 12）。\n"
          f"- 遍历用到的每个客户机物理地址（各客户机表项的和数据的）都要各做一次 4 步的 EPT 遍历："
          f"{n_g} 次客户机访问 + {n_ept} 次 EPT 访问 = **{ans['references']}** = {formula}。"
          f"不经虚拟化时只需 {native} 次。\n\n"
          "模拟硬件报告的遍历过程（`ept_step` 与 `walk_step` 事件，按顺序；表项为遍历之后的值，"
          "客户机表项的访问位 A（第 5 位）已被置位）：\n\n"
          f"{t_zh}\n")
    return text(en, zh)
