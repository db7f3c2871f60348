# ruff: noqa: RUF001 - Chinese text uses full-width punctuation
"""Practice "shadow_faults": the page faults of shadow paging (lesson 8).

A random 32-bit guest page table and 4-8 reads and writes, run with `paging="shadow"`
(kvm_intel ept=0): the guest's #PF is in the exception bitmap, so every page fault exits
to kvm.ko, whose shadow MMU walks the guest's tables in software and either fills a
shadow entry (a "shadow fault": the guest never sees it) or, when the guest's own tables
do not map the address, injects the #PF into the guest. The answers come from the run's
`kvm_exit` (EXCEPTION_NMI, vector 14), `kvm_page_fault` (its `action`) and
`kvm_mmu_get_page` (new shadow pages) events, attributed to accesses by the exit's RIP.
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
    "accesses": (int, None, 4, 8),  # None: 4 to 8, drawn from the seed
    "page_tables": (int, 2, 1, 3),
    "guest_faults": (bool, True, None, None),  # some accesses may hit unmapped addresses
    # with two page tables or more: a window (a PTE in one page table mapping another page
    # table's frame), and accesses through it (writes to its unused entries)
    "table_writes": (bool, True, None, None),
}
P, RW, A, D = 0x001, 0x002, 0x020, 0x040


def layout(seed: int, accesses: int | None, page_tables: int, guest_faults: bool,
           table_writes: bool) -> dict:
    rng = random.Random(f"shadow_faults:{seed}")
    n_acc = accesses if accesses is not None else rng.randint(4, 8)
    gfns = iter(rng.sample(range(0x400, 0x1000), 1 + page_tables * 4))
    pd = next(gfns) << 12
    pdis = rng.sample(range(1, 1024), page_tables + 1)  # the last: a PDE left not present
    pde = {0: 0x00000083}  # 4 MiB page, identity: the code, the stack, the IDT
    pte: dict[int, dict[int, int]] = {}
    mapped = []  # linear pages the tables map
    for pdi in pdis[:page_tables]:
        pt = next(gfns) << 12
        pde[pdi] = pt | P | RW | rng.choice((0, A))
        pte[pdi] = {}
        for pti in sorted(rng.sample(range(1024), rng.randint(2, 3))):
            pte[pdi][pti] = (next(gfns) << 12) | P | rng.choice((0, RW)) | rng.choice((0, A, A | D))
            mapped.append((pdi << 22) | (pti << 12))
    holes = []
    if guest_faults:
        pdi = rng.choice(list(pte))
        free = [i for i in range(1024) if i not in pte[pdi]]
        holes = [(pdi << 22) | (rng.choice(free) << 12), pdis[-1] << 22 | rng.randrange(1024) << 12]
    window = None
    if table_writes and page_tables >= 2:
        px, py = list(pte)[:2]  # a PTE in py's table maps px's table
        free = [i for i in range(1024) if i not in pte[py]]
        wi = rng.choice(free)
        pte[py][wi] = (pde[px] & 0xFFFFF000) | P | rng.choice((0, RW)) | rng.choice((0, A, A | D))
        pte[py] = dict(sorted(pte[py].items()))
        window = ((py << 22) | (wi << 12), [i for i in range(1024) if i not in pte[px]])
    pages = mapped[:]
    rng.shuffle(pages)
    pages = pages[:rng.randint(2, min(4, len(pages)))]  # a few pages, touched more than once
    acc = []
    n_holes = rng.choice((0, 1, 1, 2)) if holes else 0
    for _ in range(n_acc - n_holes):
        acc.append((rng.choice("RW"), rng.choice(pages) + rng.randrange(0, 0x1000, 4)))
    for hole in rng.sample(holes, n_holes):
        acc.insert(rng.randrange(len(acc) + 1), (rng.choice("RW"), hole + rng.randrange(0, 0x1000, 4)))
    if window is not None:  # one or two accesses through it replace others
        base, unused = window
        k = rng.randint(1, 2)
        spots = sorted(rng.sample(range(len(acc)), k))
        for j, at in enumerate(spots):
            rw = "W" if j == k - 1 else rng.choice("RW")  # the last one a write
            # a write stores 0 (ECX) in an unused entry: the guest's mappings do not change
            off = 4 * rng.choice(unused) if rw == "W" else rng.randrange(0, 0x1000, 4)
            acc[at] = (rw, base + off)
    return {"cr3": pd, "pde": dict(sorted(pde.items())), "pte": pte, "accesses": acc}


def guest_source(lay: dict, seed: int) -> tuple[str, int]:
    pd = lay["cr3"]
    head = [f"; practice shadow_faults, seed {seed}: accesses [1] .. [{len(lay['accesses'])}]",
            PREAMBLE,
            "        mov eax, pf_handler             ; IDT[14]: the guest's #PF handler",
            "        mov [idt + 14 * 8], ax",
            "        mov word [idt + 14 * 8 + 2], 0x08",
            "        mov word [idt + 14 * 8 + 4], 0x8E00",
            "        shr eax, 16",
            "        mov [idt + 14 * 8 + 6], ax",
            "        lidt [idt_descriptor]",
            "        xor edi, edi                    ; EDI counts the #PFs the guest sees",
            "        xor ecx, ecx                    ; ECX = 0: what the writes store"]
    for i, v in lay["pde"].items():
        head.append(f"        mov dword [{h(pd + 4 * i)}], {h(v, 8)}   ; PD[{i}]")
    for pdi, entries in lay["pte"].items():
        pt = lay["pde"][pdi] & 0xFFFFF000
        for i, v in entries.items():
            head.append(f"        mov dword [{h(pt + 4 * i)}], {h(v, 8)}   ; PT {h(pt)} [{i}]")
    head += ["        mov eax, cr4",
             "        or eax, 0x10                    ; CR4.PSE: PD[0] is a 4 MiB page",
             "        mov cr4, eax",
             f"        mov eax, {h(pd)}",
             "        mov cr3, eax",
             "        mov eax, cr0",
             "        or eax, 0x80000000",
             "        mov cr0, eax                    ; paging on (CR0.WP stays 0)",
             "        push eax                        ; the stack page in the shadow tables",
             "        pop eax"]
    text_ = "\n".join(head) + "\n"
    first = text_.count("\n") + 1
    for n, (rw, la) in enumerate(lay["accesses"], 1):
        ins = f"mov ebx, [{h(la)}]" if rw == "R" else f"mov [{h(la)}], ecx"
        text_ += f"        {ins:<32} ; [{n}]\n"
    text_ += ("        mov eax, edi                    ; exit status: the guest's #PF count\n"
              "        jmp exit\n\n"
              "pf_handler:                             ; skip the access that faulted\n"
              "        inc edi\n"
              "        add esp, 4                      ; the error code\n"
              "        add dword [esp], 6              ; EIP: past the 6-byte mov\n"
              "        iret\n\n" + EPILOGUE +
              "\n        align 8\nidt:    times 15 dq 0\nidt_descriptor:\n"
              "        dw 15 * 8 - 1\n        dd idt\n")
    return text_, first


QUESTIONS = [
    Question("pf_exits", text("How many #PF VM exits (EXCEPTION_NMI, vector 14) do the accesses cause?",
                              "这些访问引起多少次 #PF 虚拟机退出（EXCEPTION_NMI，向量 14）？"), "int"),
    Question("fixed", text("How many of them does kvm.ko fix itself (shadow faults the guest never sees)?",
                           "其中多少次由 kvm.ko 自行修复（客户机看不到的影子页表缺页）？"), "int"),
    Question("injected", text("How many does kvm.ko inject into the guest (its own #PF handler runs)?",
                              "其中多少次被 kvm.ko 注入客户机（客户机自己的 #PF 处理函数运行）？"), "int"),
    Question("shadow_pages", text("How many shadow page tables does kvm.ko create during the accesses?",
                                  "这些访问期间 kvm.ko 新建了多少个影子页表？"), "int"),
    Question("fault_lines", text("Which accesses cause a #PF exit? (numbers, e.g. \"1, 4\"; \"none\")",
                                 "哪些访问引起 #PF 退出？（编号，如 \"1, 4\"；没有则填 \"none\"）"), "text"),
]


def make(seed: int, params: dict) -> Problem:
    p = validate_params("shadow_faults", params, PARAMS)
    lay = layout(seed, p["accesses"], p["page_tables"], p["guest_faults"], p["table_writes"])
    source, first = guest_source(lay, seed)
    image, events, outcome = run_guest(
        source, ["kvm_exit", "kvm_page_fault", "kvm_mmu_get_page"], paging="shadow")
    if len(image.data) > 0x1000:
        raise RuntimeError("shadow_faults: the guest outgrew its one code page")
    n_acc = len(lay["accesses"])
    per: dict[int, dict] = {n: {"exits": 0, "actions": [], "pages": []} for n in range(1, n_acc + 1)}
    current = None
    for e in events:
        if e.kind == "kvm_exit":
            src = source_line(image, e["guest_rip"])
            n = src - first + 1 if src is not None else 0
            current = per.get(n)
            if current is not None and e["exit_reason"] == "EXCEPTION_NMI" and e["intr_info"] & 0xFF == 14:
                current["exits"] += 1
        elif current is not None and e.kind == "kvm_page_fault":
            current["actions"].append(e["action"])
        elif current is not None and e.kind == "kvm_mmu_get_page" and e["created"]:
            current["pages"].append((e["gfn"], e["level"], e["direct"]))
    injected = sum(a == "inject #PF" for x in per.values() for a in x["actions"])
    if outcome.exit_status != (injected << 1 | 1):
        raise RuntimeError("shadow_faults: the guest's #PF count disagrees with kvm.ko's injections")
    pf_exits = sum(x["exits"] for x in per.values())
    answers = {"pf_exits": pf_exits, "fixed": pf_exits - injected, "injected": injected,
               "shadow_pages": sum(len(x["pages"]) for x in per.values()),
               "fault_lines": lines_set(n for n, x in per.items() if x["exits"])}
    return Problem("shadow_faults", seed, _prompt(lay, seed), list(QUESTIONS), answers,
                   _solution(lay, per, answers), source, p)


def _tables_md(lay: dict, zh: bool) -> str:
    pd = lay["cr3"]
    hdr = ["索引", "表项地址", "值"] if zh else ["index", "entry address", "value"]
    out = [(f"页目录（CR3 = `{h(pd, 8)}`），非零表项（PD[0]：4 MiB 页，恒等映射代码与栈）：" if zh else
            f"Page directory (CR3 = `{h(pd, 8)}`), its non-zero entries (PD[0]: a 4 MiB page, "
            "identity, for the code and the stack):"), "",
           md_table(hdr, [[str(i), h(pd + 4 * i, 8), h(v, 8)] for i, v in lay["pde"].items()]), ""]
    for pdi, entries in lay["pte"].items():
        pt = lay["pde"][pdi] & 0xFFFFF000
        out += [(f"位于 `{h(pt, 8)}` 的页表，非零表项：" if zh else
                 f"The page table at `{h(pt, 8)}`, its non-zero entries:"), "",
                md_table(hdr, [[str(i), h(pt + 4 * i, 8), h(v, 8)] for i, v in entries.items()]), ""]
    return "\n".join(out)


def _accesses_md(lay: dict, zh: bool) -> str:
    rows = [[str(n), ("读" if rw == "R" else "写") if zh else ("read" if rw == "R" else "write"),
             h(la, 8)] for n, (rw, la) in enumerate(lay["accesses"], 1)]
    return md_table(["#", "访问" if zh else "access", "线性地址" if zh else "linear address"], rows)


def _prompt(lay: dict, seed: int) -> dict[str, str]:
    en = (f"**Shadow page faults** (seed {seed})\n\n"
          "A 32-bit guest runs on the simulated kvm.ko with **shadow paging** (EPT off). It has "
          "built these tables (every other entry is 0; an entry's bit 0 is P, bit 1 R/W, bit 5 A, "
          "bit 6 D), loaded CR3, turned paging on with CR0.WP = 0 (the kernel may write "
          "read-only pages), and touched its code and stack pages, which are now in the shadow "
          "tables:\n\n"
          f"{_tables_md(lay, False)}\n"
          "Then it makes these 4-byte accesses, in order (a write stores 0). Its #PF handler "
          "counts the fault and skips the access.\n\n"
          f"{_accesses_md(lay, False)}\n\n"
          "kvm.ko's shadow MMU maps a page read-only until the guest's PTE is dirty (so that it "
          "can set the D bit on the first write), and shadows each guest page table with one "
          "shadow page (vmsim's simplification: no quadrants). The shadow of the page directory "
          "(the shadow root) was built when paging was turned on.")
    zh = (f"**影子页表缺页**（种子 {seed}）\n\n"
          "一个 32 位客户机在模拟的 kvm.ko 上以**影子分页**运行（未开 EPT）。它建立了如下页表"
          "（其余表项均为 0；表项第 0 位为 P，第 1 位 R/W，第 5 位 A，第 6 位 D），加载了 CR3，"
          "在 CR0.WP = 0 时开启分页（内核可以写只读页），并已访问过自己的代码页和栈页，"
          "它们已在影子页表中：\n\n"
          f"{_tables_md(lay, True)}\n"
          "然后它按顺序进行如下 4 字节访问（写入的值为 0）。它的 #PF 处理函数会记下这次缺页并跳过该访问。\n\n"
          f"{_accesses_md(lay, True)}\n\n"
          "kvm.ko 的影子 MMU 在客户机 PTE 的 D 位置位之前只以只读方式映射页面（以便在第一次写时"
          "设置 D 位），并且每个客户机页表只用一个影子页表（vmsim 的简化：没有 quadrant）。"
          "页目录的影子（影子根页表）在开启分页时就已建好。")
    return text(en, zh)


ACTION_ZH = {"map writable": "映射为可写", "map read-only": "映射为只读", "inject #PF": "注入 #PF",
             "emulate page-table write": "模拟对页表的写", "emulate MMIO": "模拟 MMIO"}


def _solution(lay: dict, per: dict[int, dict], ans: dict) -> dict[str, str]:
    rows_en, rows_zh = [], []
    tables = {v & 0xFFFFF000 for i, v in lay["pde"].items() if i}
    for n, (rw, la) in enumerate(lay["accesses"], 1):
        x = per[n]
        pdi, pti = la >> 22, (la >> 12) & 0x3FF
        pde = lay["pde"].get(pdi, 0)
        pte = lay["pte"].get(pdi, {}).get(pti, 0) if pde & P else 0
        if not pde & P:
            walk_en, walk_zh = f"PD[{pdi}] not present", f"PD[{pdi}] 不存在"
        elif not pte & P:
            walk_en, walk_zh = f"PD[{pdi}] → PT[{pti}] not present", f"PD[{pdi}] → PT[{pti}] 不存在"
        else:
            walk_en = walk_zh = f"PD[{pdi}] → PT[{pti}] → {h(pte & 0xFFFFF000 | la & 0xFFF, 8)}"
            if pte & 0xFFFFF000 in tables:
                walk_en += " (a page table)"
                walk_zh += "（一个页表）"
        if x["exits"]:
            what_en = "#PF exit: " + ", ".join(x["actions"])
            what_zh = "#PF 退出：" + "，".join(ACTION_ZH.get(a, a) for a in x["actions"])
        else:
            what_en, what_zh = "no exit (the shadow entry is there)", "不退出（影子表项已存在）"
        new = ", ".join(f"gfn {h(g)}" + (" (direct)" if d else "") for g, _lvl, d in x["pages"])
        rows_en.append([str(n), "read" if rw == "R" else "write", h(la, 8), walk_en, what_en, new])
        rows_zh.append([str(n), "读" if rw == "R" else "写", h(la, 8), walk_zh, what_zh, new])
    t_en = md_table(["#", "access", "linear", "guest walk", "what happened", "new shadow page"], rows_en)
    t_zh = md_table(["#", "访问", "线性地址", "客户机页表遍历", "发生了什么", "新建影子页表"], rows_zh)
    summary_en = (f"**{ans['pf_exits']}** #PF exits (accesses {ans['fault_lines']}): **{ans['fixed']}** "
                  f"fixed by kvm.ko, **{ans['injected']}** injected into the guest; "
                  f"**{ans['shadow_pages']}** new shadow page tables.")
    summary_zh = (f"**{ans['pf_exits']}** 次 #PF 退出（访问 {ans['fault_lines']}）：**{ans['fixed']}** "
                  f"次由 kvm.ko 修复，**{ans['injected']}** 次注入客户机；新建 **{ans['shadow_pages']}** "
                  "个影子页表。")
    en = (f"{summary_en}\n\n{t_en}\n\n"
          "The rules, access by access (from the `kvm_exit`, `kvm_page_fault` and "
          "`kvm_mmu_get_page` events of the run):\n"
          "- The first access to a page has no shadow entry: a #PF exit. kvm.ko walks the guest's "
          "tables; if they map the page it fills the shadow entry (and creates the shadow page "
          "table for that guest page table if it is the first access through it) and resumes "
          "the guest, which never sees the fault.\n"
          "- A read maps the page read-only unless the guest PTE is already dirty; a later write "
          "to it faults again (error code 3: present, write), kvm.ko sets D in the guest PTE and "
          "maps it writable. A write first maps it writable at once; a read after that does not "
          "exit.\n"
          "- If the guest's own PDE or PTE is not present, kvm.ko injects the #PF: the guest's "
          "handler runs. No shadow entry is made, so no shadow page either.\n"
          "- A guest page table that kvm.ko shadows is write-protected (when its shadow page is "
          "made, every shadow entry mapping it loses its write bit). A write to it is a #PF exit: "
          "kvm.ko emulates the write and drops the shadow entries it changes (`emulate "
          "page-table write`), and the page stays write-protected, so the next write exits again. "
          "An emulated write fills no shadow entry, so it creates no shadow page either. "
          "Reading it is mapped read-only; writing it before it is shadowed is an ordinary page.\n")
    zh = (f"{summary_zh}\n\n{t_zh}\n\n"
          "逐次访问的规则（来自这次运行的 `kvm_exit`、`kvm_page_fault` 与 `kvm_mmu_get_page` 事件）：\n"
          "- 第一次访问某页时没有影子表项：#PF 退出。kvm.ko 遍历客户机页表；若客户机页表映射了该页，"
          "它就填好影子表项（若这是经由该客户机页表的第一次访问，还会为它新建影子页表），然后恢复"
          "客户机运行，客户机看不到这次缺页。\n"
          "- 读访问以只读方式映射该页，除非客户机 PTE 已是脏的；之后对它的写会再次缺页（错误码 3："
          "存在、写），kvm.ko 设置客户机 PTE 的 D 位并将其映射为可写。先写则立即映射为可写，"
          "之后的读不再退出。\n"
          "- 若客户机自己的 PDE 或 PTE 不存在，kvm.ko 把 #PF 注入客户机：客户机的处理函数运行。"
          "不建立影子表项，因此也不新建影子页表。\n"
          "- kvm.ko 为其建立了影子的客户机页表是写保护的（建立影子页表时，映射它的所有影子表项都"
          "被去掉写权限）。写它会引起 #PF 退出：kvm.ko 模拟这次写，并丢弃它改动的影子表项"
          "（`emulate page-table write`），该页仍然写保护，所以下一次写还会退出。"
          "被模拟的写不填影子表项，因此也不新建影子页表。读它则映射为只读；"
          "在它有影子之前写它，就和普通页一样。\n")
    return text(en, zh)
