<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="zh_CN">
<context>
    <name></name>
    <message>
        <source>no such event yet: the guest runs on without one (run, or pause later)</source>
        <translation>还没有这样的事件：客户机继续运行也未遇到（请运行，或稍后暂停）</translation>
    </message>
    <message>
        <source>finished</source>
        <translation>已结束</translation>
    </message>
    <message>
        <source>breakpoint: {what}</source>
        <translation>断点：{what}</translation>
    </message>
    <message>
        <source>waiting for gdb on 127.0.0.1:{port} (target remote :{port})</source>
        <translation>正在 127.0.0.1:{port} 等待 gdb（target remote :{port}）</translation>
    </message>
    <message>
        <source>gdb attached: the guest is stopped</source>
        <translation>gdb 已连接：客户机已停止</translation>
    </message>
    <message>
        <source>killed by the debugger (gdb kill): reset to start again</source>
        <translation>被调试器终止（gdb kill）：请重置以重新开始</translation>
    </message>
    <message>
        <source>Assemble &amp;&amp; reset</source>
        <translation>汇编并重置</translation>
    </message>
    <message>
        <source>Assemble the edited source and start the guest again (Ctrl+B)</source>
        <translation>汇编编辑后的源代码并重新启动客户机（Ctrl+B）</translation>
    </message>
    <message>
        <source>Save</source>
        <translation>保存</translation>
    </message>
    <message>
        <source>Write the edited source to its file</source>
        <translation>将编辑后的源代码写回它的文件</translation>
    </message>
    <message>
        <source>{file} (edited, not saved)</source>
        <translation>{file}（已编辑，未保存）</translation>
    </message>
    <message>
        <source>Save source</source>
        <translation>保存源代码</translation>
    </message>
    <message>
        <source>Assembly (*.asm);;All files (*)</source>
        <translation>汇编源文件 (*.asm);;所有文件 (*)</translation>
    </message>
    <message>
        <source>cannot save {file}: {error}</source>
        <translation>无法保存 {file}：{error}</translation>
    </message>
    <message>
        <source>Does not assemble: line {line}, column {col}: {message}</source>
        <translation>无法汇编：第 {line} 行第 {col} 列：{message}</translation>
    </message>
    <message>
        <source>Does not assemble: line {line}: {message}</source>
        <translation>无法汇编：第 {line} 行：{message}</translation>
    </message>
    <message>
        <source>Does not assemble: {message}</source>
        <translation>无法汇编：{message}</translation>
    </message>
    <message>
        <source>{n} bytes</source>
        <translation>{n} 字节</translation>
    </message>
    <message>
        <source>Guest source</source>
        <translation>客户机源代码</translation>
    </message>
    <message>
        <source>Disassembly, memory</source>
        <translation>反汇编、内存</translation>
    </message>
    <message>
        <source>Registers</source>
        <translation>寄存器</translation>
    </message>
    <message>
        <source>VMCS</source>
        <translation>VMCS</translation>
    </message>
    <message>
        <source>Page tables</source>
        <translation>页表</translation>
    </message>
    <message>
        <source>Devices</source>
        <translation>设备</translation>
    </message>
    <message>
        <source>Event log</source>
        <translation>事件日志</translation>
    </message>
    <message>
        <source>Exit statistics</source>
        <translation>退出统计</translation>
    </message>
    <message>
        <source>, disk {name}{ro}</source>
        <translation>，磁盘 {name}{ro}</translation>
    </message>
    <message>
        <source>vmsim: {guest} ({backend}, {paging}, {smp} vCPU{s}, irqchip {irqchip}{disk})</source>
        <translation>vmsim：{guest}（{backend}，{paging}，{smp} 个 vCPU，irqchip {irqchip}{disk}）</translation>
    </message>
    <message>
        <source>Controls</source>
        <translation>控制栏</translation>
    </message>
    <message>
        <source>&amp;File</source>
        <translation>文件(&amp;F)</translation>
    </message>
    <message>
        <source>&amp;Run</source>
        <translation>运行(&amp;R)</translation>
    </message>
    <message>
        <source>&amp;Breakpoints</source>
        <translation>断点(&amp;B)</translation>
    </message>
    <message>
        <source>&amp;View</source>
        <translation>视图(&amp;V)</translation>
    </message>
    <message>
        <source>Open…</source>
        <translation>打开…</translation>
    </message>
    <message>
        <source>open a guest (.asm or flat binary)</source>
        <translation>打开客户机（.asm 源文件或平坦二进制文件）</translation>
    </message>
    <message>
        <source>Screenshot…</source>
        <translation>截图…</translation>
    </message>
    <message>
        <source>Export timeline…</source>
        <translation>导出时间线…</translation>
    </message>
    <message>
        <source>the events the event log holds, for ui.perfetto.dev or chrome://tracing</source>
        <translation>导出事件日志中的事件，供 ui.perfetto.dev 或 chrome://tracing 查看</translation>
    </message>
    <message>
        <source>Quit</source>
        <translation>退出</translation>
    </message>
    <message>
        <source>Run</source>
        <translation>运行</translation>
    </message>
    <message>
        <source>run / pause</source>
        <translation>运行 / 暂停</translation>
    </message>
    <message>
        <source>Step instruction</source>
        <translation>单步指令</translation>
    </message>
    <message>
        <source>Step event</source>
        <translation>单步事件</translation>
    </message>
    <message>
        <source>To VM exit</source>
        <translation>到虚拟机退出</translation>
    </message>
    <message>
        <source>run to the next VM exit</source>
        <translation>运行到下一次虚拟机退出</translation>
    </message>
    <message>
        <source>To userspace exit</source>
        <translation>到用户态退出</translation>
    </message>
    <message>
        <source>run to the next exit to userspace (KVM_RUN returns)</source>
        <translation>运行到下一次退出到用户态（KVM_RUN 返回）</translation>
    </message>
    <message>
        <source>Reset</source>
        <translation>重置</translation>
    </message>
    <message>
        <source>start the guest again</source>
        <translation>重新启动客户机</translation>
    </message>
    <message>
        <source>Wait for gdb…</source>
        <translation>等待 gdb…</translation>
    </message>
    <message>
        <source>serve the GDB remote protocol on 127.0.0.1 (docs/gdb.md)</source>
        <translation>在 127.0.0.1 上提供 GDB 远程协议服务（docs/gdb.md）</translation>
    </message>
    <message>
        <source>Speed and machine</source>
        <translation>速度与机器</translation>
    </message>
    <message>
        <source> speed: slow </source>
        <translation> 速度：慢 </translation>
    </message>
    <message>
        <source>slow motion (one event at a time, animated) ... full speed (batches)</source>
        <translation>慢动作（一次一个事件，带动画）……全速（成批）</translation>
    </message>
    <message>
        <source> full </source>
        <translation> 全速 </translation>
    </message>
    <message>
        <source>Toggle breakpoint at cursor line</source>
        <translation>在光标所在行切换断点</translation>
    </message>
    <message>
        <source>Break on address…</source>
        <translation>地址断点…</translation>
    </message>
    <message>
        <source>Break on VM exit reason…</source>
        <translation>虚拟机退出原因断点…</translation>
    </message>
    <message>
        <source>Break on I/O port…</source>
        <translation>I/O 端口断点…</translation>
    </message>
    <message>
        <source>Break on {what}</source>
        <translation>事件断点：{what}</translation>
    </message>
    <message>
        <source>Clear all breakpoints</source>
        <translation>清除所有断点</translation>
    </message>
    <message>
        <source>Dark theme</source>
        <translation>深色主题</translation>
    </message>
    <message>
        <source>Presentation mode (large fonts)</source>
        <translation>演示模式（大字体）</translation>
    </message>
    <message>
        <source>Presentation</source>
        <translation>演示</translation>
    </message>
    <message>
        <source>the diagram and one panel, large, for a lecture hall; the animation slowed (Ctrl+Shift+P)</source>
        <translation>只留架构图和一个面板，放大显示，适合阶梯教室；动画放慢（Ctrl+Shift+P）</translation>
    </message>
    <message>
        <source>&amp;Reset layout</source>
        <translation>重置布局(&amp;R)</translation>
    </message>
    <message>
        <source>every panel back in its place, sized for the window (Ctrl+Shift+L)</source>
        <translation>每个面板回到原位，按窗口大小调整（Ctrl+Shift+L）</translation>
    </message>
    <message>
        <source>S&amp;lower</source>
        <translation>减慢(&amp;L)</translation>
    </message>
    <message>
        <source>&amp;Faster</source>
        <translation>加快(&amp;F)</translation>
    </message>
    <message>
        <source>Animate event paths</source>
        <translation>动画显示事件路径</translation>
    </message>
    <message>
        <source>Compare…</source>
        <translation>对比…</translation>
    </message>
    <message>
        <source>run this guest twice side by side, differing in one setting</source>
        <translation>把这个客户机并排运行两次，只差一项设置</translation>
    </message>
    <message>
        <source>&amp;Lessons</source>
        <translation>课程(&amp;L)</translation>
    </message>
    <message>
        <source>Choose a lesson…</source>
        <translation>选择课程…</translation>
    </message>
    <message>
        <source>the lessons, with the steps you have done</source>
        <translation>各课程，以及你已完成的步骤</translation>
    </message>
    <message>
        <source>Check the step</source>
        <translation>检查此步骤</translation>
    </message>
    <message>
        <source>Next hint</source>
        <translation>下一条提示</translation>
    </message>
    <message>
        <source>line {line} has no code: no breakpoint there</source>
        <translation>第 {line} 行没有代码：不能在此设置断点</translation>
    </message>
    <message>
        <source>Break on address</source>
        <translation>地址断点</translation>
    </message>
    <message>
        <source>guest address (hex) or symbol:</source>
        <translation>客户机地址（十六进制）或符号：</translation>
    </message>
    <message>
        <source>not an address: {text}</source>
        <translation>不是地址：{text}</translation>
    </message>
    <message>
        <source>breakpoint at {addr:#x}</source>
        <translation>断点设在 {addr:#x}</translation>
    </message>
    <message>
        <source>Break on VM exit</source>
        <translation>虚拟机退出断点</translation>
    </message>
    <message>
        <source>exit reason:</source>
        <translation>退出原因：</translation>
    </message>
    <message>
        <source>breakpoint on VM exit {name}</source>
        <translation>断点：虚拟机退出 {name}</translation>
    </message>
    <message>
        <source>Break on port</source>
        <translation>端口断点</translation>
    </message>
    <message>
        <source>I/O port (hex):</source>
        <translation>I/O 端口（十六进制）：</translation>
    </message>
    <message>
        <source>breakpoint on port {port:#x}</source>
        <translation>断点：端口 {port:#x}</translation>
    </message>
    <message>
        <source>breakpoint on {what}</source>
        <translation>已设断点：{what}</translation>
    </message>
    <message>
        <source>no breakpoint on {what}</source>
        <translation>已取消断点：{what}</translation>
    </message>
    <message>
        <source>gdb drives this guest: detach it first</source>
        <translation>此客户机正由 gdb 控制：请先断开 gdb</translation>
    </message>
    <message>
        <source>{smp} vCPU{s}, irqchip {irqchip}: the guest starts again</source>
        <translation>{smp} 个 vCPU，irqchip {irqchip}：客户机重新启动</translation>
    </message>
    <message>
        <source>Raw disk images (*.img *.raw *.bin);;All files (*)</source>
        <translation>原始磁盘镜像 (*.img *.raw *.bin);;所有文件 (*)</translation>
    </message>
    <message>
        <source>; cannot show {path}: {error}</source>
        <translation>; 无法显示 {path}：{error}</translation>
    </message>
    <message>
        <source>; (a flat binary: no source)</source>
        <translation>; （平坦二进制文件：没有源代码）</translation>
    </message>
    <message>
        <source>{file} line {line}: {message}. Fix it, then Assemble &amp; reset (Ctrl+B)</source>
        <translation>{file} 第 {line} 行：{message}。改正后点击“汇编并重置”（Ctrl+B）</translation>
    </message>
    <message>
        <source>assembly failed: {error}</source>
        <translation>汇编失败：{error}</translation>
    </message>
    <message>
        <source>assembled; the guest starts again</source>
        <translation>已汇编；客户机重新启动</translation>
    </message>
    <message>
        <source>The edit does not assemble (line {line}: {message}); the guest is the last one that did</source>
        <translation>编辑后的源代码无法汇编（第 {line} 行：{message}）；客户机仍是上一次汇编成功的版本</translation>
    </message>
    <message>
        <source>Open guest</source>
        <translation>打开客户机</translation>
    </message>
    <message>
        <source>Guests (*.asm *.bin);;All files (*)</source>
        <translation>客户机 (*.asm *.bin);;所有文件 (*)</translation>
    </message>
    <message>
        <source>cannot open {path}:
{error}</source>
        <translation>无法打开 {path}：
{error}</translation>
    </message>
    <message>
        <source>running: repainting from state</source>
        <translation>运行中：按状态重绘</translation>
    </message>
    <message>
        <source>running</source>
        <translation>运行中</translation>
    </message>
    <message>
        <source>finished: {why}</source>
        <translation>已结束：{why}</translation>
    </message>
    <message>
        <source>EPT (--paging ept)</source>
        <translation>EPT（--paging ept）</translation>
    </message>
    <message>
        <source>shadow paging (--paging shadow)</source>
        <translation>影子分页（--paging shadow）</translation>
    </message>
    <message>
        <source>irqchip in kvm.ko (--irqchip kernel)</source>
        <translation>irqchip 在 kvm.ko 中（--irqchip kernel）</translation>
    </message>
    <message>
        <source>irqchip in QEMU (--irqchip userspace)</source>
        <translation>irqchip 在 QEMU 中（--irqchip userspace）</translation>
    </message>
    <message>
        <source>ioeventfd (the default)</source>
        <translation>ioeventfd（默认）</translation>
    </message>
    <message>
        <source>no ioeventfd (--no-ioeventfd)</source>
        <translation>不用 ioeventfd（--no-ioeventfd）</translation>
    </message>
    <message>
        <source>VGA window coalesced (the default)</source>
        <translation>VGA 窗口合并（默认）</translation>
    </message>
    <message>
        <source>every VGA store to QEMU (--no-coalesced-mmio)</source>
        <translation>每次 VGA 写都交给 QEMU（--no-coalesced-mmio）</translation>
    </message>
    <message>
        <source>paging: EPT against shadow paging</source>
        <translation>分页：EPT 对比影子分页</translation>
    </message>
    <message>
        <source>irqchip: in kvm.ko against in QEMU</source>
        <translation>irqchip：在 kvm.ko 中对比在 QEMU 中</translation>
    </message>
    <message>
        <source>ioeventfd: the virtqueue kick with and without an ioeventfd</source>
        <translation>ioeventfd：virtqueue 通知（kick）用与不用 ioeventfd</translation>
    </message>
    <message>
        <source>coalesced MMIO: VGA stores with and without kvm.ko&apos;s ring</source>
        <translation>合并 MMIO：VGA 写用与不用 kvm.ko 的环</translation>
    </message>
    <message>
        <source>page faults and other exceptions</source>
        <translation>缺页异常及其他异常</translation>
    </message>
    <message>
        <source>control-register writes: CR3 loads, CR0, CR4</source>
        <translation>控制寄存器写入：加载 CR3、写 CR0、CR4</translation>
    </message>
    <message>
        <source>TLB invalidations of one page</source>
        <translation>单页 TLB 失效</translation>
    </message>
    <message>
        <source>EPT violations: first touches of guest-physical pages</source>
        <translation>EPT 违例：首次访问客户机物理页</translation>
    </message>
    <message>
        <source>MMIO accesses</source>
        <translation>MMIO 访问次数</translation>
    </message>
    <message>
        <source>port I/O</source>
        <translation>端口 I/O 次数</translation>
    </message>
    <message>
        <source>the guest idles until an interrupt</source>
        <translation>客户机空闲等待中断</translation>
    </message>
    <message>
        <source>host interrupts</source>
        <translation>宿主机中断</translation>
    </message>
    <message>
        <source>interrupt windows</source>
        <translation>中断窗口打开</translation>
    </message>
    <message>
        <source>{left}: {a} VM exits, {ai} guest instructions; {right}: {b} VM exits, {bi} guest instructions (Step takes each side to its own next VM exit).</source>
        <translation>{left}：{a} 次虚拟机退出，{ai} 条客户机指令；{right}：{b} 次虚拟机退出，{bi} 条客户机指令（“单步”让每一侧各自运行到自己的下一次虚拟机退出）。</translation>
    </message>
    <message>
        <source>Both ran the guest to its end. {right}: {n} more VM exits than {left} ({b} against {a}).</source>
        <translation>两侧都已把客户机运行到结束。{right} 比 {left} 多 {n} 次虚拟机退出（{b} 对 {a}）。</translation>
    </message>
    <message>
        <source>Both ran the guest to its end. {right}: {n} fewer VM exits than {left} ({b} against {a}).</source>
        <translation>两侧都已把客户机运行到结束。{right} 比 {left} 少 {n} 次虚拟机退出（{b} 对 {a}）。</translation>
    </message>
    <message>
        <source>Both ran the guest to its end. {right}: as many VM exits as {left} ({b} against {a}).</source>
        <translation>两侧都已把客户机运行到结束。{right} 与 {left} 的虚拟机退出次数相同（{b} 对 {a}）。</translation>
    </message>
    <message>
        <source>More on the right: {list}.</source>
        <translation>右侧更多：{list}。</translation>
    </message>
    <message>
        <source>Fewer on the right: {list}.</source>
        <translation>右侧更少：{list}。</translation>
    </message>
    <message>
        <source>Exits to userspace (KVM_RUN returns): {b} against {a}; KVM_INTERRUPT injections by QEMU: {bi} against {ai}.</source>
        <translation>退出到用户态（KVM_RUN 返回）：{b} 对 {a}；QEMU 用 KVM_INTERRUPT 注入：{bi} 对 {ai}。</translation>
    </message>
    <message>
        <source>MMIO exits to QEMU (KVM_EXIT_MMIO): {b} against {a}; exits to userspace in all: {bu} against {au}.</source>
        <translation>到 QEMU 的 MMIO 退出（KVM_EXIT_MMIO）：{b} 对 {a}；退出到用户态共计：{bu} 对 {au}。</translation>
    </message>
    <message>
        <source>Exits to userspace (KVM_RUN returns): {b} against {a}; virtual time {bt} against {at} cycles.</source>
        <translation>退出到用户态（KVM_RUN 返回）：{b} 对 {a}；虚拟时间 {bt} 对 {at} 周期。</translation>
    </message>
    <message>
        <source>paused</source>
        <translation>已暂停</translation>
    </message>
    <message>
        <source>{state} | {k} VM exits taken | {n} guest instructions | virtual time {t} cycles | EIP {eip:#010x}</source>
        <translation>{state} | 已发生 {k} 次虚拟机退出 | {n} 条客户机指令 | 虚拟时间 {t} 周期 | EIP {eip:#010x}</translation>
    </message>
    <message>
        <source>vmsim: {guest} side by side: {what}</source>
        <translation>vmsim：{guest} 并排对比：{what}</translation>
    </message>
    <message>
        <source>Both sides have always taken the same number of VM exits: Step runs each to its own next VM exit, Run runs both to the end (the left in batches, the right following to its count).</source>
        <translation>两侧发生的虚拟机退出次数始终相同：“单步”让每一侧运行到自己的下一次虚拟机退出，“运行”把两侧都运行到结束（左侧分批运行，右侧跟到相同次数）。</translation>
    </message>
    <message>
        <source>Compare controls</source>
        <translation>对比控制</translation>
    </message>
    <message>
        <source>run both to the end / pause</source>
        <translation>把两侧运行到结束 / 暂停</translation>
    </message>
    <message>
        <source>Step</source>
        <translation>单步</translation>
    </message>
    <message>
        <source>each side runs to its next VM exit (or its next N)</source>
        <translation>每一侧运行到自己的下一次（或下 N 次）虚拟机退出</translation>
    </message>
    <message>
        <source>{n} VM exits</source>
        <translation>{n} 次虚拟机退出</translation>
    </message>
    <message>
        <source>1 VM exit</source>
        <translation>1 次虚拟机退出</translation>
    </message>
    <message>
        <source>how many VM exits Step takes on each side</source>
        <translation>“单步”在每一侧走过的虚拟机退出次数</translation>
    </message>
    <message>
        <source>start both sides again</source>
        <translation>两侧都重新开始</translation>
    </message>
    <message>
        <source>both sides finished</source>
        <translation>两侧都已结束</translation>
    </message>
    <message>
        <source>{side}: {why}</source>
        <translation>{side}：{why}</translation>
    </message>
    <message>
        <source>Compare side by side</source>
        <translation>并排对比</translation>
    </message>
    <message>
        <source>Run this guest twice, differing in:</source>
        <translation>把这个客户机运行两次，不同之处：</translation>
    </message>
    <message>
        <source>{state} | EIP {eip:#010x} line {line} | {n} instructions | virtual time {time} cycles | paging {paging}</source>
        <translation>{state} | EIP {eip:#010x} 第 {line} 行 | {n} 条指令 | 虚拟时间 {time} 周期 | 分页 {paging}</translation>
    </message>
    <message>
        <source>EIP {eip:#010x}  EAX {eax:#x}  ESP {esp:#x}  {n} insns</source>
        <translation>EIP {eip:#010x}  EAX {eax:#x}  ESP {esp:#x}  {n} 条指令</translation>
    </message>
    <message>
        <source>VMX non-root: running the guest</source>
        <translation>VMX 非根模式：运行客户机</translation>
    </message>
    <message>
        <source>VMX root: host (kvm.ko / QEMU)</source>
        <translation>VMX 根模式：宿主机（kvm.ko / QEMU）</translation>
    </message>
    <message>
        <source>paging on, {n} TLB entries</source>
        <translation>分页开启，{n} 个 TLB 表项</translation>
    </message>
    <message>
        <source>paging off, {n} TLB entries</source>
        <translation>分页关闭，{n} 个 TLB 表项</translation>
    </message>
    <message>
        <source>held by {owner}</source>
        <translation>持有者 {owner}</translation>
    </message>
    <message>
        <source>{n} MiB RAM</source>
        <translation>{n} MiB 内存</translation>
    </message>
    <message>
        <source>KVM_RUN &gt; vcpu_enter_guest &gt; VM entry ... {last}</source>
        <translation>KVM_RUN &gt; vcpu_enter_guest &gt; 虚拟机进入 … {last}</translation>
    </message>
    <message>
        <source>last exit {reason}</source>
        <translation>上次退出 {reason}</translation>
    </message>
    <message>
        <source>no exit yet</source>
        <translation>尚无退出</translation>
    </message>
    <message>
        <source>EPT (TDP MMU): {n} gfns mapped</source>
        <translation>EPT（TDP MMU）：已映射 {n} 个 gfn</translation>
    </message>
    <message>
        <source>shadow paging: {n} shadow pages</source>
        <translation>影子分页：{n} 个影子页</translation>
    </message>
    <message>
        <source>launched</source>
        <translation>已启动（launched）</translation>
    </message>
    <message>
        <source>not launched</source>
        <translation>未启动</translation>
    </message>
    <message>
        <source>none yet</source>
        <translation>尚无</translation>
    </message>
    <message>
        <source>port 0x3F8; {n} bytes sent</source>
        <translation>端口 0x3F8；已发送 {n} 字节</translation>
    </message>
    <message>
        <source>ended</source>
        <translation>已终止</translation>
    </message>
    <message>
        <source>waits: {what}</source>
        <translation>等待：{what}</translation>
    </message>
    <message>
        <source>KVM_RUN: in the guest</source>
        <translation>KVM_RUN：在客户机中</translation>
    </message>
    <message>
        <source>KVM_RUN: kvm_vcpu_block (HLT)</source>
        <translation>KVM_RUN：kvm_vcpu_block（HLT）</translation>
    </message>
    <message>
        <source>running: kvm_cpu_exec</source>
        <translation>运行中：kvm_cpu_exec</translation>
    </message>
    <message>
        <source>{what}; holds the BQL</source>
        <translation>{what}；持有 BQL</translation>
    </message>
    <message>
        <source>main_loop_wait: {state}; {n} timers armed</source>
        <translation>main_loop_wait：{state}；{n} 个定时器已设置</translation>
    </message>
    <message>
        <source>owner {owner}; waiting: {waiters}; contended {n}x</source>
        <translation>持有者 {owner}；等待者：{waiters}；争用 {n} 次</translation>
    </message>
    <message>
        <source>{n} APICs; {busy} with IRR/ISR bits; {timers} timers armed</source>
        <translation>{n} 个 APIC；{busy} 个有 IRR/ISR 位；{timers} 个定时器已设置</translation>
    </message>
    <message>
        <source>Pause</source>
        <translation>暂停</translation>
    </message>
    <message>
        <source>Wait for gdb</source>
        <translation>等待 gdb</translation>
    </message>
    <message>
        <source>TCP port on 127.0.0.1 (0: any free port):</source>
        <translation>127.0.0.1 上的 TCP 端口（0：任一空闲端口）：</translation>
    </message>
    <message>
        <source>cannot listen on 127.0.0.1:{port}:
{error}</source>
        <translation>无法在 127.0.0.1:{port} 上监听：
{error}</translation>
    </message>
    <message>
        <source>breakpoint</source>
        <translation>断点</translation>
    </message>
    <message>
        <source>Export timeline</source>
        <translation>导出时间线</translation>
    </message>
    <message>
        <source>Chrome trace JSON (*.json)</source>
        <translation>Chrome 跟踪 JSON (*.json)</translation>
    </message>
    <message>
        <source>timeline: {n} trace events in {path} (open it in ui.perfetto.dev)</source>
        <translation>时间线：{n} 个跟踪事件写入 {path}（请在 ui.perfetto.dev 中打开）</translation>
    </message>
    <message>
        <source>Save screenshot</source>
        <translation>保存截图</translation>
    </message>
    <message>
        <source>PNG (*.png)</source>
        <translation>PNG 图像 (*.png)</translation>
    </message>
    <message>
        <source>a lesson could not be read: {error}</source>
        <translation>有一课无法读取：{error}</translation>
    </message>
    <message>
        <source>cannot open the lesson: {error}</source>
        <translation>无法打开课程：{error}</translation>
    </message>
    <message>
        <source>No lessons are installed (the lessons/ directory is empty or missing).</source>
        <translation>没有安装任何课程（lessons/ 目录为空或不存在）。</translation>
    </message>
    <message>
        <source>{n}. {title} ({done}/{total})</source>
        <translation>{n}. {title}（{done}/{total}）</translation>
    </message>
    <message>
        <source>cannot start this step&apos;s machine: {error}</source>
        <translation>无法启动此步骤的机器：{error}</translation>
    </message>
    <message>
        <source>This step has another guest: the breakpoints set before are cleared.</source>
        <translation>此步骤换了客户机：之前设置的断点已清除。</translation>
    </message>
    <message>
        <source>{action}: do it from the File menu</source>
        <translation>{action}：请从文件菜单操作</translation>
    </message>
    <message>
        <source>Done for you; the snapshot is {path}. Now press Check.</source>
        <translation>已替你完成；快照文件为 {path}。现在按“检查”。</translation>
    </message>
    <message>
        <source>&amp;Language</source>
        <translation>语言(&amp;L)</translation>
    </message>
    <message>
        <source>register</source>
        <translation>寄存器名</translation>
    </message>
    <message>
        <source>value</source>
        <translation>值</translation>
    </message>
    <message>
        <source>line {n}</source>
        <translation>第 {n} 行</translation>
    </message>
    <message>
        <source>limit {limit:#x}</source>
        <translation>界限 {limit:#x}</translation>
    </message>
    <message>
        <source>base {base:#x} limit {limit:#x}</source>
        <translation>基址 {base:#x} 界限 {limit:#x}</translation>
    </message>
    <message>
        <source>VMX non-root (guest)</source>
        <translation>VMX 非根模式（客户机）</translation>
    </message>
    <message>
        <source>VMX root</source>
        <translation>VMX 根模式</translation>
    </message>
    <message>
        <source>bare metal</source>
        <translation>裸机</translation>
    </message>
    <message>
        <source>guest instructions retired</source>
        <translation>客户机已执行的指令数</translation>
    </message>
    <message>
        <source>virtual cycles</source>
        <translation>虚拟周期</translation>
    </message>
    <message>
        <source>address (hex, or a symbol); empty: follow ESP</source>
        <translation>地址（十六进制或符号）；留空：跟随 ESP</translation>
    </message>
    <message>
        <source>memory at</source>
        <translation>内存地址</translation>
    </message>
    <message>
        <source>(not mapped)</source>
        <translation>（未映射）</translation>
    </message>
    <message>
        <source>Guest state</source>
        <translation>客户机状态</translation>
    </message>
    <message>
        <source>Host state</source>
        <translation>宿主机状态</translation>
    </message>
    <message>
        <source>Control</source>
        <translation>控制</translation>
    </message>
    <message>
        <source>Exit information</source>
        <translation>退出信息</translation>
    </message>
    <message>
        <source>no VM exit yet</source>
        <translation>尚无虚拟机退出</translation>
    </message>
    <message>
        <source>field</source>
        <translation>字段</translation>
    </message>
    <message>
        <source>encoding</source>
        <translation>编码</translation>
    </message>
    <message>
        <source>no VMCS on this backend</source>
        <translation>此后端没有 VMCS</translation>
    </message>
    <message>
        <source>last exit: {reason}</source>
        <translation>上次退出：{reason}</translation>
    </message>
    <message>
        <source>qualification {q:#x}</source>
        <translation>退出限定 {q:#x}</translation>
    </message>
    <message>
        <source>instruction length {n}</source>
        <translation>指令长度 {n}</translation>
    </message>
    <message>
        <source>interruption info {info:#x}</source>
        <translation>中断信息 {info:#x}</translation>
    </message>
    <message>
        <source>, </source>
        <translation>，</translation>
    </message>
    <message>
        <source>guest tables (from its CR3)</source>
        <translation>客户机页表（从其 CR3 开始）</translation>
    </message>
    <message>
        <source>entry</source>
        <translation>表项</translation>
    </message>
    <message>
        <source>maps</source>
        <translation>映射</translation>
    </message>
    <message>
        <source>EPT / shadow (kvm.ko)</source>
        <translation>EPT / 影子页表（kvm.ko）</translation>
    </message>
    <message>
        <source>last walk: step</source>
        <translation>上次页表遍历：步骤</translation>
    </message>
    <message>
        <source>table</source>
        <translation>表</translation>
    </message>
    <message>
        <source>index</source>
        <translation>索引</translation>
    </message>
    <message>
        <source>outcome</source>
        <translation>结果</translation>
    </message>
    <message>
        <source>linear page</source>
        <translation>线性页</translation>
    </message>
    <message>
        <source>physical page</source>
        <translation>物理页</translation>
    </message>
    <message>
        <source>writable</source>
        <translation>可写</translation>
    </message>
    <message>
        <source>yes: the walk that filled the entry allowed a write and set the dirty bit, so a write goes ahead; walks first: a write walks the tables again (and may fault)</source>
        <translation>是：填入该项的那次页表遍历允许写入并已置上脏位，写入直接进行；先遍历：写入会重新遍历页表（并可能产生缺页）</translation>
    </message>
    <message>
        <source>last walk of {addr:#x}</source>
        <translation>{addr:#x} 的上次页表遍历</translation>
    </message>
    <message>
        <source>yes</source>
        <translation>是</translation>
    </message>
    <message>
        <source>walks first</source>
        <translation>先遍历</translation>
    </message>
    <message>
        <source>paging is off (CR0.PG=0)</source>
        <translation>分页未开启（CR0.PG=0）</translation>
    </message>
    <message>
        <source>linear = physical</source>
        <translation>线性地址 = 物理地址</translation>
    </message>
    <message>
        <source>{lin:#x}: 4M page {phys:#x}</source>
        <translation>{lin:#x}：4M 页 {phys:#x}</translation>
    </message>
    <message>
        <source>{lin:#x}: table {phys:#x}</source>
        <translation>{lin:#x}：页表 {phys:#x}</translation>
    </message>
    <message>
        <source>EPT leaves (kvm.ko TDP MMU)</source>
        <translation>EPT 叶表项（kvm.ko TDP MMU）</translation>
    </message>
    <message>
        <source>host frame</source>
        <translation>宿主机页帧</translation>
    </message>
    <message>
        <source>MMIO (misconfigured)</source>
        <translation>MMIO（EPT 错误配置）</translation>
    </message>
    <message>
        <source>shadow pages (kvm_mmu_page)</source>
        <translation>影子页（kvm_mmu_page）</translation>
    </message>
    <message>
        <source>direct</source>
        <translation>直接映射</translation>
    </message>
    <message>
        <source>direct, read-only</source>
        <translation>直接映射，只读</translation>
    </message>
    <message>
        <source>{n} present</source>
        <translation>{n} 个有效表项</translation>
    </message>
    <message>
        <source>rows 1-{rows}, columns 1-{cols} of 25x80 (the rest blank)</source>
        <translation>25x80 中的第 1-{rows} 行、第 1-{cols} 列（其余为空）</translation>
    </message>
    <message>
        <source>type here: sent to COM1&apos;s receive FIFO on Enter (\n appended)</source>
        <translation>在此输入：按回车发送到 COM1 的接收 FIFO（末尾追加 \n）</translation>
    </message>
    <message>
        <source>COM1 (16550 at 0x3F8)</source>
        <translation>COM1（16550，位于 0x3F8）</translation>
    </message>
    <message>
        <source>VGA text (0xB8000)</source>
        <translation>VGA 文本（0xB8000）</translation>
    </message>
    <message>
        <source>serial + VGA</source>
        <translation>串口 + VGA</translation>
    </message>
    <message>
        <source>port / MMIO accesses</source>
        <translation>端口 / MMIO 访问</translation>
    </message>
    <message>
        <source>coalesced MMIO ring: {n} writes queued in kvm.ko, not yet applied by QEMU (first {first}, last {last})</source>
        <translation>合并 MMIO 环：kvm.ko 中排队 {n} 次写入，QEMU 尚未应用（first {first}，last {last}）</translation>
    </message>
    <message>
        <source>all layers</source>
        <translation>所有层</translation>
    </message>
    <message>
        <source>all kinds</source>
        <translation>所有类型</translation>
    </message>
    <message>
        <source>seq</source>
        <translation>序号</translation>
    </message>
    <message>
        <source>time</source>
        <translation>时间</translation>
    </message>
    <message>
        <source>layer</source>
        <translation>层</translation>
    </message>
    <message>
        <source>kind</source>
        <translation>事件类型</translation>
    </message>
    <message>
        <source>what</source>
        <translation>内容</translation>
    </message>
    <message>
        <source>filter:</source>
        <translation>过滤：</translation>
    </message>
    <message>
        <source>clear</source>
        <translation>清空</translation>
    </message>
    <message>
        <source>no VM exits yet</source>
        <translation>还没有虚拟机退出</translation>
    </message>
    <message>
        <source>VM exit</source>
        <translation>虚拟机退出</translation>
    </message>
    <message>
        <source>count</source>
        <translation>次数</translation>
    </message>
    <message>
        <source>share</source>
        <translation>占比</translation>
    </message>
    <message>
        <source>avg time</source>
        <translation>平均时间</translation>
    </message>
    <message>
        <source>time share</source>
        <translation>时间占比</translation>
    </message>
    <message>
        <source>VM exits {exits}, VM entries {entries}; exits to userspace: {us}; guest instructions {n}; virtual time {time} cycles</source>
        <translation>虚拟机退出 {exits} 次，虚拟机进入 {entries} 次；退出到用户态：{us}；客户机指令 {n} 条；虚拟时间 {time} 周期</translation>
    </message>
    <message>
        <source>not armed</source>
        <translation>未设置</translation>
    </message>
    <message>
        <source>in {us:.1f} us (virtual)</source>
        <translation>{us:.1f} 微秒后（虚拟时间）</translation>
    </message>
    <message>
        <source>meaning</source>
        <translation>含义</translation>
    </message>
    <message>
        <source>IRQ {first}-{last} -&gt; vectors {base}-{top}</source>
        <translation>IRQ {first}-{last} -&gt; 向量 {base}-{top}</translation>
    </message>
    <message>
        <source>requested: {irqs}</source>
        <translation>已请求：{irqs}</translation>
    </message>
    <message>
        <source>in service: {irqs}</source>
        <translation>服务中：{irqs}</translation>
    </message>
    <message>
        <source>unmasked: {irqs}</source>
        <translation>未屏蔽：{irqs}</translation>
    </message>
    <message>
        <source>level-triggered: {irqs}</source>
        <translation>电平触发：{irqs}</translation>
    </message>
    <message>
        <source>the master&apos;s INT pin to the CPU: raised</source>
        <translation>主片通往 CPU 的 INT 引脚：已拉高</translation>
    </message>
    <message>
        <source>the master&apos;s INT pin to the CPU</source>
        <translation>主片通往 CPU 的 INT 引脚</translation>
    </message>
    <message>
        <source>counting down now</source>
        <translation>正在倒计数</translation>
    </message>
    <message>
        <source>OUT pin (IRQ 0)</source>
        <translation>OUT 引脚（IRQ 0）</translation>
    </message>
    <message>
        <source>OUT pin</source>
        <translation>OUT 引脚</translation>
    </message>
    <message>
        <source>{when}, cycle</source>
        <translation>{when}（值为周期数）</translation>
    </message>
    <message>
        <source>requested vectors</source>
        <translation>已请求的向量</translation>
    </message>
    <message>
        <source>vectors in service</source>
        <translation>服务中的向量</translation>
    </message>
    <message>
        <source>task priority</source>
        <translation>任务优先级</translation>
    </message>
    <message>
        <source>processor priority</source>
        <translation>处理器优先级</translation>
    </message>
    <message>
        <source>enabled</source>
        <translation>已启用</translation>
    </message>
    <message>
        <source>software-disabled</source>
        <translation>软件禁用</translation>
    </message>
    <message>
        <source>masked</source>
        <translation>已屏蔽</translation>
    </message>
    <message>
        <source>unmasked</source>
        <translation>未屏蔽</translation>
    </message>
    <message>
        <source>divide by {n}</source>
        <translation>分频 {n}</translation>
    </message>
    <message>
        <source>PIC and PIT {where}</source>
        <translation>PIC 和 PIT {where}</translation>
    </message>
    <message>
        <source>PIC and PIT {where}; {no_apic}</source>
        <translation>PIC 和 PIT {where}；{no_apic}</translation>
    </message>
    <message>
        <source>no</source>
        <translation>否</translation>
    </message>
    <message>
        <source>kvm.ko&apos;s vcpu-&gt;stat.{name}</source>
        <translation>kvm.ko 的 vcpu-&gt;stat.{name}</translation>
    </message>
    <message>
        <source>{name} at {at}</source>
        <translation>{name} 于 {at}</translation>
    </message>
    <message>
        <source>waiting</source>
        <translation>等待中</translation>
    </message>
    <message>
        <source>ready</source>
        <translation>就绪</translation>
    </message>
    <message>
        <source>bit {n}</source>
        <translation>位 {n}</translation>
    </message>
    <message>
        <source>the virtio-mmio transports with a device</source>
        <translation>带有设备的 virtio-mmio 传输</translation>
    </message>
    <message>
        <source>the device&apos;s virtqueue shown</source>
        <translation>显示的设备 virtqueue</translation>
    </message>
    <message>
        <source>device {n}</source>
        <translation>设备 {n}</translation>
    </message>
    <message>
        <source>queue {n}</source>
        <translation>队列 {n}</translation>
    </message>
    <message>
        <source>interrupt injected</source>
        <translation>注入中断</translation>
    </message>
    <message>
        <source>BQL contended</source>
        <translation>BQL 争用</translation>
    </message>
    <message>
        <source>virtqueue kick</source>
        <translation>virtqueue 通知（kick）</translation>
    </message>
    <message>
        <source>request completed</source>
        <translation>请求完成</translation>
    </message>
    <message>
        <source>stop when kvm.ko injects an interrupt into a vCPU (kvm_inj_virq)</source>
        <translation>当 kvm.ko 向 vCPU 注入中断时停下（kvm_inj_virq）</translation>
    </message>
    <message>
        <source>stop when a thread waits for the BQL another thread holds (bql wait)</source>
        <translation>当线程等待另一线程持有的 BQL 时停下（bql wait）</translation>
    </message>
    <message>
        <source>stop when the driver kicks a virtqueue: its QueueNotify write (ioeventfd_write, or virtio_mmio_write_offset without ioeventfd)</source>
        <translation>当驱动程序通知（kick）virtqueue 时停下：即它写 QueueNotify（ioeventfd_write；不用 ioeventfd 时为 virtio_mmio_write_offset）</translation>
    </message>
    <message>
        <source>stop when virtio-blk completes a request: status written, used ring advanced (virtio_blk_req_complete)</source>
        <translation>当 virtio-blk 完成一个请求时停下：状态已写入，已用环前移（virtio_blk_req_complete）</translation>
    </message>
    <message>
        <source> vCPUs: </source>
        <translation> vCPU 数：</translation>
    </message>
    <message>
        <source>vCPUs of the machine (--smp): the guest starts again</source>
        <translation>虚拟机的 vCPU 数（--smp）：客户机将重新启动</translation>
    </message>
    <message>
        <source> irqchip: </source>
        <translation> irqchip：</translation>
    </message>
    <message>
        <source>kernel: PIC, PIT and local APICs in kvm.ko (KVM_CREATE_IRQCHIP); userspace: PIC and PIT in QEMU, injected with KVM_INTERRUPT (--irqchip): the guest starts again</source>
        <translation>kernel：PIC、PIT 和本地 APIC 在 kvm.ko 中（KVM_CREATE_IRQCHIP）；userspace：PIC 和 PIT 在 QEMU 中，用 KVM_INTERRUPT 注入（--irqchip）：客户机将重新启动</translation>
    </message>
    <message>
        <source>Interrupts</source>
        <translation>中断</translation>
    </message>
    <message>
        <source>vCPUs &amp;&amp; threads</source>
        <translation>vCPU 与线程</translation>
    </message>
    <message>
        <source>PIC master (0x20)</source>
        <translation>PIC 主片（0x20）</translation>
    </message>
    <message>
        <source>PIC slave (0xA0)</source>
        <translation>PIC 从片（0xA0）</translation>
    </message>
    <message>
        <source>PIT channel {n}</source>
        <translation>PIT 通道 {n}</translation>
    </message>
    <message>
        <source>local APIC, vCPU {n}</source>
        <translation>本地 APIC，vCPU {n}</translation>
    </message>
    <message>
        <source>in kvm.ko (--irqchip kernel)</source>
        <translation>在 kvm.ko 中（--irqchip kernel）</translation>
    </message>
    <message>
        <source>in QEMU (--irqchip userspace)</source>
        <translation>在 QEMU 中（--irqchip userspace）</translation>
    </message>
    <message>
        <source>no local APIC: QEMU&apos;s userspace irqchip has none (--irqchip userspace)</source>
        <translation>没有本地 APIC：QEMU 的用户态 irqchip 不提供（--irqchip userspace）</translation>
    </message>
    <message>
        <source>no interrupt controllers on this backend</source>
        <translation>此后端没有中断控制器</translation>
    </message>
    <message>
        <source>interrupt on terminal count</source>
        <translation>计数结束时中断</translation>
    </message>
    <message>
        <source>hardware one-shot</source>
        <translation>硬件单次触发</translation>
    </message>
    <message>
        <source>rate generator</source>
        <translation>频率发生器</translation>
    </message>
    <message>
        <source>square wave</source>
        <translation>方波</translation>
    </message>
    <message>
        <source>software strobe</source>
        <translation>软件选通</translation>
    </message>
    <message>
        <source>hardware strobe</source>
        <translation>硬件选通</translation>
    </message>
    <message>
        <source>thread</source>
        <translation>线程</translation>
    </message>
    <message>
        <source>the vCPU&apos;s QEMU thread</source>
        <translation>vCPU 的 QEMU 线程</translation>
    </message>
    <message>
        <source>mode</source>
        <translation>模式</translation>
    </message>
    <message>
        <source>kvm.ko&apos;s vcpu-&gt;mode: in_guest, blocked (kvm_vcpu_block), outside</source>
        <translation>kvm.ko 的 vcpu-&gt;mode：in_guest、blocked（kvm_vcpu_block）、outside</translation>
    </message>
    <message>
        <source>KVM_GET_MP_STATE: runnable, halted, init_received ...</source>
        <translation>KVM_GET_MP_STATE：runnable、halted、init_received …</translation>
    </message>
    <message>
        <source>halted (QEMU)</source>
        <translation>已停机（QEMU）</translation>
    </message>
    <message>
        <source>cpu-&gt;halted: QEMU&apos;s vCPU thread sleeps (userspace HLT)</source>
        <translation>cpu-&gt;halted：QEMU 的 vCPU 线程在睡眠（用户态 HLT）</translation>
    </message>
    <message>
        <source>kvm_run.if_flag: the guest&apos;s EFLAGS.IF as KVM_RUN returned</source>
        <translation>kvm_run.if_flag：KVM_RUN 返回时客户机的 EFLAGS.IF</translation>
    </message>
    <message>
        <source>window exiting</source>
        <translation>窗口退出</translation>
    </message>
    <message>
        <source>the VMCS&apos;s interrupt-window exiting control</source>
        <translation>VMCS 的中断窗口退出控制位</translation>
    </message>
    <message>
        <source>request window</source>
        <translation>请求窗口</translation>
    </message>
    <message>
        <source>kvm_run.request_interrupt_window (QEMU asks)</source>
        <translation>kvm_run.request_interrupt_window（QEMU 请求）</translation>
    </message>
    <message>
        <source>ready for inj.</source>
        <translation>可注入</translation>
    </message>
    <message>
        <source>kvm_run.ready_for_interrupt_injection: KVM_INTERRUPT would be taken now</source>
        <translation>kvm_run.ready_for_interrupt_injection：此时 KVM_INTERRUPT 会被接受</translation>
    </message>
    <message>
        <source>injecting</source>
        <translation>正在注入</translation>
    </message>
    <message>
        <source>the vector in the VM-entry interruption information</source>
        <translation>虚拟机进入中断信息字段中的向量</translation>
    </message>
    <message>
        <source>interruptib.</source>
        <translation>可中断性</translation>
    </message>
    <message>
        <source>guest interruptibility state: STI / MOV SS blocking</source>
        <translation>客户机可中断性状态：STI / MOV SS 阻塞</translation>
    </message>
    <message>
        <source>signal</source>
        <translation>信号</translation>
    </message>
    <message>
        <source>a signal (SIG_IPI) pending for the vCPU thread</source>
        <translation>vCPU 线程有待处理的信号（SIG_IPI）</translation>
    </message>
    <message>
        <source>the thread&apos;s virtual time (cycles)</source>
        <translation>线程的虚拟时间（周期）</translation>
    </message>
    <message>
        <source>waits for</source>
        <translation>等待</translation>
    </message>
    <message>
        <source>what the thread waits for</source>
        <translation>线程在等待什么</translation>
    </message>
    <message>
        <source>virtual time (cycles)</source>
        <translation>虚拟时间（周期）</translation>
    </message>
    <message>
        <source>state</source>
        <translation>状态</translation>
    </message>
    <message>
        <source>BQL: owner {owner}; waiters {waiters}; contended {contended} times</source>
        <translation>BQL：持有者 {owner}；等待者 {waiters}；争用 {contended} 次</translation>
    </message>
    <message>
        <source>main loop: {state}; timers armed: {timers}</source>
        <translation>主循环：{state}；已设置的定时器：{timers}</translation>
    </message>
    <message>
        <source>running (timers, fd handlers, bottom halves under the BQL)</source>
        <translation>运行中（在 BQL 下运行定时器、fd 处理函数、下半部）</translation>
    </message>
    <message>
        <source>waiting in ppoll</source>
        <translation>在 ppoll 中等待</translation>
    </message>
    <message>
        <source>nobody</source>
        <translation>无人</translation>
    </message>
    <message>
        <source>none</source>
        <translation>无</translation>
    </message>
    <message>
        <source>Attach disk image…</source>
        <translation>挂载磁盘镜像…</translation>
    </message>
    <message>
        <source>Attach disk image read-only…</source>
        <translation>以只读方式挂载磁盘镜像…</translation>
    </message>
    <message>
        <source>Detach disk</source>
        <translation>卸下磁盘</translation>
    </message>
    <message>
        <source>a raw image for virtio-blk on the last virtio-mmio transport, as vmsim run --disk: the guest starts again</source>
        <translation>最后一个 virtio-mmio 传输上 virtio-blk 的原始镜像，同 vmsim run --disk：客户机将重新启动</translation>
    </message>
    <message>
        <source>disk {name}{ro} attached: the guest starts again</source>
        <translation>磁盘 {name}{ro} 已挂载：客户机重新启动</translation>
    </message>
    <message>
        <source>no disk: the guest starts again</source>
        <translation>无磁盘：客户机重新启动</translation>
    </message>
    <message>
        <source>cannot attach the disk: {error}</source>
        <translation>无法挂载磁盘：{error}</translation>
    </message>
    <message>
        <source>(none)</source>
        <translation>（无）</translation>
    </message>
    <message>
        <source>{name}{ro}: {size} ({capacity} sectors); sectors read {read}, written {written}; {touched} touched</source>
        <translation>{name}{ro}：{size}（{capacity} 个扇区）；已读扇区 {read}，已写 {written}；涉及 {touched} 个</translation>
    </message>
    <message>
        <source>, read-only</source>
        <translation>，只读</translation>
    </message>
    <message>
        <source>no disk (--disk FILE, or File &gt; Attach disk image)</source>
        <translation>无磁盘（--disk FILE，或 文件 &gt; 挂载磁盘镜像）</translation>
    </message>
    <message>
        <source>transport {transport} at {base:#x}, IRQ {irq}; status {status}; queue 0: avail idx {avail}, device at {last_avail}, used idx {used}</source>
        <translation>传输 {transport} 位于 {base:#x}，IRQ {irq}；状态 {status}；队列 0：avail idx {avail}，设备处理到 {last_avail}，used idx {used}</translation>
    </message>
    <message>
        <source>none: the vCPU thread runs the device</source>
        <translation>无：由 vCPU 线程运行设备</translation>
    </message>
    <message>
        <source>{name}: {state}</source>
        <translation>{name}：{state}</translation>
    </message>
    <message>
        <source>Device queues</source>
        <translation>设备队列</translation>
    </message>
    <message>
        <source>no virtio device (--disk FILE, or File &gt; Attach disk image)</source>
        <translation>没有 virtio 设备（--disk FILE，或 文件 &gt; 挂载磁盘镜像）</translation>
    </message>
    <message>
        <source>virtio-mmio transport {transport} at {base:#x}, IRQ {irq} (line {level}): {device}</source>
        <translation>virtio-mmio 传输 {transport} 位于 {base:#x}，IRQ {irq}（线电平 {level}）：{device}</translation>
    </message>
    <message>
        <source>status {status:#04x}: {names}</source>
        <translation>状态 {status:#04x}：{names}</translation>
    </message>
    <message>
        <source>features: device {device:#x}, driver {driver:#x}; negotiated: {names}</source>
        <translation>特性：设备 {device:#x}，驱动 {driver:#x}；协商结果：{names}</translation>
    </message>
    <message>
        <source>broken: {why}</source>
        <translation>已损坏：{why}</translation>
    </message>
    <message>
        <source>queue {index}: size {size}, {ready}; desc {desc:#x}, avail {avail:#x}, used {used:#x}; in use {inuse}</source>
        <translation>队列 {index}：大小 {size}，{ready}；desc {desc:#x}，avail {avail:#x}，used {used:#x}；使用中 {inuse}</translation>
    </message>
    <message>
        <source>not ready</source>
        <translation>未就绪</translation>
    </message>
    <message>
        <source>available ring: idx {idx} (driver), last_avail_idx {last} (device); flags {flags:#x}</source>
        <translation>可用环：idx {idx}（驱动），last_avail_idx {last}（设备）；flags {flags:#x}</translation>
    </message>
    <message>
        <source>used ring: idx {idx}; flags {flags:#x}</source>
        <translation>已用环：idx {idx}；flags {flags:#x}</translation>
    </message>
    <message>
        <source>no rings: the queue is not ready</source>
        <translation>没有环：队列未就绪</translation>
    </message>
    <message>
        <source>address</source>
        <translation>地址</translation>
    </message>
    <message>
        <source>length</source>
        <translation>长度</translation>
    </message>
    <message>
        <source>flags</source>
        <translation>标志</translation>
    </message>
    <message>
        <source>next</source>
        <translation>下一个</translation>
    </message>
    <message>
        <source>slot</source>
        <translation>槽</translation>
    </message>
    <message>
        <source>head</source>
        <translation>链头</translation>
    </message>
    <message>
        <source>type</source>
        <translation>类型</translation>
    </message>
    <message>
        <source>sector</source>
        <translation>扇区</translation>
    </message>
    <message>
        <source>sectors</source>
        <translation>扇区数</translation>
    </message>
    <message>
        <source>descriptors</source>
        <translation>描述符链</translation>
    </message>
    <message>
        <source>status</source>
        <translation>状态码</translation>
    </message>
    <message>
        <source>progress</source>
        <translation>进度</translation>
    </message>
    <message>
        <source>access</source>
        <translation>访问</translation>
    </message>
    <message>
        <source>not popped yet</source>
        <translation>尚未取出</translation>
    </message>
    <message>
        <source>popped</source>
        <translation>已取出</translation>
    </message>
    <message>
        <source>new</source>
        <translation>新</translation>
    </message>
    <message>
        <source>{name}{ro}: {capacity} sectors; read {read}, written {written}; {touched} touched</source>
        <translation>{name}{ro}：{capacity} 个扇区；已读 {read}，已写 {written}；涉及 {touched} 个</translation>
    </message>
    <message>
        <source>Descriptors</source>
        <translation>描述符</translation>
    </message>
    <message>
        <source>Available ring</source>
        <translation>可用环</translation>
    </message>
    <message>
        <source>Used ring</source>
        <translation>已用环</translation>
    </message>
    <message>
        <source>Requests</source>
        <translation>请求</translation>
    </message>
    <message>
        <source>Disk sectors</source>
        <translation>磁盘扇区</translation>
    </message>
    <message>
        <source>read</source>
        <translation>读</translation>
    </message>
    <message>
        <source>written</source>
        <translation>写</translation>
    </message>
    <message>
        <source>read, written</source>
        <translation>读、写</translation>
    </message>
    <message>
        <source>◀ Instruction</source>
        <translation>◀ 指令</translation>
    </message>
    <message>
        <source>step back one guest instruction (undo Step instruction)</source>
        <translation>后退一条客户机指令（撤销“单步指令”）</translation>
    </message>
    <message>
        <source>◀ Event</source>
        <translation>◀ 事件</translation>
    </message>
    <message>
        <source>step back one event (undo Step event)</source>
        <translation>后退一个事件（撤销“单步事件”）</translation>
    </message>
    <message>
        <source>◀ VM exit</source>
        <translation>◀ 虚拟机退出</translation>
    </message>
    <message>
        <source>back to just after the previous VM exit (kvm_exit)</source>
        <translation>回到上一次虚拟机退出刚发生之后（kvm_exit）</translation>
    </message>
    <message>
        <source>◀ Userspace exit</source>
        <translation>◀ 用户态退出</translation>
    </message>
    <message>
        <source>back to just after the previous exit to userspace (kvm_userspace_exit)</source>
        <translation>回到上一次退出到用户态刚发生之后（kvm_userspace_exit）</translation>
    </message>
    <message>
        <source>◀◀ Reverse</source>
        <translation>◀◀ 反向</translation>
    </message>
    <message>
        <source>reverse continue: back to the previous hit of any breakpoint, else to the start of the run</source>
        <translation>反向继续：回到上一次命中任一断点之处，若没有则回到运行开始</translation>
    </message>
    <message>
        <source>steps back need the simulated kvm.ko: the host&apos;s KVM keeps its state in the kernel</source>
        <translation>后退需要模拟的 kvm.ko：宿主机的 KVM 把状态保存在内核中</translation>
    </message>
    <message>
        <source>steps back need a VM (--backend sim)</source>
        <translation>后退需要虚拟机（--backend sim）</translation>
    </message>
    <message>
        <source>this session keeps no history of its run (Session(history=False))</source>
        <translation>此会话不保存运行历史（Session(history=False)）</translation>
    </message>
    <message>
        <source>at the start of the run: nothing earlier to go back to</source>
        <translation>已在运行开始处：没有更早的状态可回退</translation>
    </message>
    <message>
        <source>back at the start of the run</source>
        <translation>已回到运行开始</translation>
    </message>
    <message>
        <source>back at virtual time {time} cycles, event {seq}</source>
        <translation>已回到虚拟时间 {time} 周期，事件 {seq}</translation>
    </message>
    <message>
        <source>reverse continue: breakpoint: {what}</source>
        <translation>反向继续：断点：{what}</translation>
    </message>
    <message>
        <source>reverse continue: no breakpoint hit earlier: back at the start of the run</source>
        <translation>反向继续：之前没有命中断点：已回到运行开始</translation>
    </message>
    <message>
        <source>Timeline</source>
        <translation>时间线</translation>
    </message>
    <message>
        <source>VM exits</source>
        <translation>各次虚拟机退出</translation>
    </message>
    <message>
        <source>exits to userspace</source>
        <translation>退出到用户态</translation>
    </message>
    <message>
        <source>timeline: no virtual time yet</source>
        <translation>时间线：尚无虚拟时间</translation>
    </message>
    <message>
        <source>the run in virtual time: ticks are VM exits (top row) and exits to userspace (bottom row); click or drag, then release, to go to that point</source>
        <translation>按虚拟时间展示的运行过程：刻度是虚拟机退出（上行）和退出到用户态（下行）；点击或拖动后松开，即跳到该时刻</translation>
    </message>
    <message>
        <source>{now} / {end} cycles</source>
        <translation>{now} / {end} 周期</translation>
    </message>
    <message>
        <source>no timeline: {why}</source>
        <translation>没有时间线：{why}</translation>
    </message>
    <message>
        <source>at virtual time {time} cycles (asked for {asked})</source>
        <translation>位于虚拟时间 {time} 周期（请求的是 {asked}）</translation>
    </message>
    <message>
        <source>Save snapshot…</source>
        <translation>保存快照…</translation>
    </message>
    <message>
        <source>write the whole session (guest source, machine, state) to a .vmsnap file</source>
        <translation>把整个会话（客户机源代码、虚拟机配置、状态）写入 .vmsnap 文件</translation>
    </message>
    <message>
        <source>Open snapshot…</source>
        <translation>打开快照…</translation>
    </message>
    <message>
        <source>reopen a session from a .vmsnap file: its guest, its machine, its state</source>
        <translation>从 .vmsnap 文件重新打开会话：其客户机、虚拟机配置和状态</translation>
    </message>
    <message>
        <source>vmsim snapshots (*.vmsnap);;All files (*)</source>
        <translation>vmsim 快照 (*.vmsnap);;所有文件 (*)</translation>
    </message>
    <message>
        <source>snapshot saved: {summary}</source>
        <translation>快照已保存：{summary}</translation>
    </message>
    <message>
        <source>snapshot {name} opened: {backend}, {smp} vCPU{s}, irqchip {irqchip}, at virtual time {time} cycles</source>
        <translation>快照 {name} 已打开：{backend}，{smp} 个 vCPU，irqchip {irqchip}，位于虚拟时间 {time} 周期</translation>
    </message>
    <message>
        <source> (exits counted since {name} was opened)</source>
        <translation>（退出次数从打开 {name} 时开始统计）</translation>
    </message>
    <message>
        <source>cannot save the snapshot: {error}</source>
        <translation>无法保存快照：{error}</translation>
    </message>
    <message>
        <source>cannot open the snapshot: {error}</source>
        <translation>无法打开快照：{error}</translation>
    </message>
    <message>
        <source>walks are not traced here (--backend sim): see the tooltip</source>
        <translation>此处不跟踪页表遍历（--backend sim）：见工具提示</translation>
    </message>
    <message>
        <source>A step back replays the run with the events numbered as they were; the per-access MMU events (walk_step, tlb_miss, tlb_hit) would change that numbering, so the window does not listen to them on the simulated backend (--backend bare shows each walk).</source>
        <translation>后退时会按原来的事件编号重放运行过程；每次访存都产生的 MMU 事件（walk_step、tlb_miss、tlb_hit）会改变这个编号，所以在模拟后端上窗口不监听它们（--backend bare 会显示每次遍历）。</translation>
    </message>
    <message>
        <source>vCPU out of the guest: its state stays in this VMCS; QEMU sees only copies (KVM_GET_REGS / KVM_GET_SREGS)</source>
        <translation>vCPU 不在客户机中：它的状态留在这个 VMCS 里；QEMU 只能看到副本（KVM_GET_REGS / KVM_GET_SREGS）</translation>
    </message>
    <message>
        <source>Between a VM exit and the next VM entry the guest&apos;s RIP, RSP, RFLAGS, control and segment registers stay in the VMCS&apos;s guest-state area (its general registers in kvm.ko&apos;s vcpu-&gt;arch.regs). QEMU never reads the VMCS: cpu_synchronize_state asks kvm.ko for copies with KVM_GET_REGS and KVM_GET_SREGS, and writes changes back with KVM_SET_*.</source>
        <translation>在一次虚拟机退出和下一次虚拟机进入之间，客户机的 RIP、RSP、RFLAGS、控制寄存器和段寄存器留在 VMCS 的客户机状态区中（通用寄存器在 kvm.ko 的 vcpu-&gt;arch.regs 中）。QEMU 从不读取 VMCS：cpu_synchronize_state 用 KVM_GET_REGS 和 KVM_GET_SREGS 向 kvm.ko 要副本，并用 KVM_SET_* 写回修改。</translation>
    </message>
    <message>
        <source>Guest (VMX non-root)</source>
        <translation>客户机（VMX 非根模式）</translation>
    </message>
    <message>
        <source>QEMU (userspace VMM)</source>
        <translation>QEMU（用户态 VMM）</translation>
    </message>
    <message>
        <source>KVM (kvm.ko, host kernel)</source>
        <translation>KVM（kvm.ko，宿主机内核）</translation>
    </message>
    <message>
        <source>Hardware</source>
        <translation>硬件</translation>
    </message>
    <message>
        <source>Applications</source>
        <translation>应用程序</translation>
    </message>
    <message>
        <source>guest code</source>
        <translation>客户机代码</translation>
    </message>
    <message>
        <source>Drivers</source>
        <translation>驱动程序</translation>
    </message>
    <message>
        <source>COM1 polling, VGA text writes, PIC and PIT programming</source>
        <translation>COM1 轮询、VGA 文本写入、PIC 和 PIT 编程</translation>
    </message>
    <message>
        <source>vCPU{n}</source>
        <translation>vCPU{n}</translation>
    </message>
    <message>
        <source>vCPU{n} thread</source>
        <translation>vCPU{n} 线程</translation>
    </message>
    <message>
        <source>kvm_cpu_exec</source>
        <translation>kvm_cpu_exec</translation>
    </message>
    <message>
        <source>main loop</source>
        <translation>主循环</translation>
    </message>
    <message>
        <source>iothread: main_loop_wait</source>
        <translation>iothread：main_loop_wait</translation>
    </message>
    <message>
        <source>BQL</source>
        <translation>BQL</translation>
    </message>
    <message>
        <source>serial 16550</source>
        <translation>串口 16550</translation>
    </message>
    <message>
        <source>port 0x3F8</source>
        <translation>端口 0x3F8</translation>
    </message>
    <message>
        <source>VGA text</source>
        <translation>VGA 文本</translation>
    </message>
    <message>
        <source>MMIO 0xB8000</source>
        <translation>MMIO 0xB8000</translation>
    </message>
    <message>
        <source>isa-debug-exit</source>
        <translation>isa-debug-exit</translation>
    </message>
    <message>
        <source>port 0x501</source>
        <translation>端口 0x501</translation>
    </message>
    <message>
        <source>8259 PIC pair</source>
        <translation>8259 PIC 对</translation>
    </message>
    <message>
        <source>hw/intc/i8259.c</source>
        <translation>hw/intc/i8259.c</translation>
    </message>
    <message>
        <source>iothread</source>
        <translation>iothread</translation>
    </message>
    <message>
        <source>virtio-blk (virtio-mmio)</source>
        <translation>virtio-blk（virtio-mmio）</translation>
    </message>
    <message>
        <source>no disk (--disk FILE)</source>
        <translation>无磁盘（--disk FILE）</translation>
    </message>
    <message>
        <source>8254 PIT</source>
        <translation>8254 PIT</translation>
    </message>
    <message>
        <source>hw/timer/i8254.c, a main-loop timer</source>
        <translation>hw/timer/i8254.c，主循环定时器</translation>
    </message>
    <message>
        <source>run loop</source>
        <translation>运行循环</translation>
    </message>
    <message>
        <source>KVM_RUN &gt; vcpu_enter_guest &gt; VM entry ... exit &gt; handler</source>
        <translation>KVM_RUN &gt; vcpu_enter_guest &gt; 虚拟机进入 … 退出 &gt; 处理函数</translation>
    </message>
    <message>
        <source>exit handlers</source>
        <translation>退出处理函数</translation>
    </message>
    <message>
        <source>kvm_vmx_exit_handlers[]</source>
        <translation>kvm_vmx_exit_handlers[]</translation>
    </message>
    <message>
        <source>emulator</source>
        <translation>指令模拟器</translation>
    </message>
    <message>
        <source>MMIO, string I/O</source>
        <translation>MMIO、串 I/O</translation>
    </message>
    <message>
        <source>MMU</source>
        <translation>MMU</translation>
    </message>
    <message>
        <source>PIC</source>
        <translation>PIC</translation>
    </message>
    <message>
        <source>arch/x86/kvm/i8259.c</source>
        <translation>arch/x86/kvm/i8259.c</translation>
    </message>
    <message>
        <source>PIT</source>
        <translation>PIT</translation>
    </message>
    <message>
        <source>arch/x86/kvm/i8254.c</source>
        <translation>arch/x86/kvm/i8254.c</translation>
    </message>
    <message>
        <source>local APICs</source>
        <translation>本地 APIC</translation>
    </message>
    <message>
        <source>arch/x86/kvm/lapic.c</source>
        <translation>arch/x86/kvm/lapic.c</translation>
    </message>
    <message>
        <source>physical CPU</source>
        <translation>物理 CPU</translation>
    </message>
    <message>
        <source>MMU + TLB</source>
        <translation>MMU + TLB</translation>
    </message>
    <message>
        <source>memory</source>
        <translation>内存</translation>
    </message>
    <message>
        <source>disk</source>
        <translation>磁盘</translation>
    </message>
    <message>
        <source>VM entry</source>
        <translation>虚拟机进入</translation>
    </message>
    <message>
        <source>VM entry failed</source>
        <translation>虚拟机进入失败</translation>
    </message>
    <message>
        <source>VM exit: an interrupt for the host</source>
        <translation>虚拟机退出：发给宿主机的中断</translation>
    </message>
    <message>
        <source>VM exit: interrupt window open</source>
        <translation>虚拟机退出：中断窗口已打开</translation>
    </message>
    <message>
        <source>inject</source>
        <translation>注入</translation>
    </message>
    <message>
        <source>inject interrupt (PIC)</source>
        <translation>注入中断（PIC）</translation>
    </message>
    <message>
        <source>inject interrupt (local APIC)</source>
        <translation>注入中断（本地 APIC）</translation>
    </message>
    <message>
        <source>inject interrupt (KVM_INTERRUPT)</source>
        <translation>注入中断（KVM_INTERRUPT）</translation>
    </message>
    <message>
        <source>virtio-mmio&apos;s IRQ line into kvm.ko&apos;s PIC</source>
        <translation>virtio-mmio 的 IRQ 线接入 kvm.ko 的 PIC</translation>
    </message>
    <message>
        <source>virtio-mmio&apos;s IRQ line into QEMU&apos;s PIC</source>
        <translation>virtio-mmio 的 IRQ 线接入 QEMU 的 PIC</translation>
    </message>
    <message>
        <source>PIT raises its IRQ line</source>
        <translation>PIT 拉高其 IRQ 线</translation>
    </message>
    <message>
        <source>KVM_IRQ_LINE</source>
        <translation>KVM_IRQ_LINE</translation>
    </message>
    <message>
        <source>PIC input</source>
        <translation>PIC 输入</translation>
    </message>
    <message>
        <source>IPI</source>
        <translation>IPI（处理器间中断）</translation>
    </message>
    <message>
        <source>signal check</source>
        <translation>信号检查</translation>
    </message>
    <message>
        <source>APIC register</source>
        <translation>APIC 寄存器</translation>
    </message>
    <message>
        <source>APIC interrupt</source>
        <translation>APIC 中断</translation>
    </message>
    <message>
        <source>EOI</source>
        <translation>EOI（中断结束）</translation>
    </message>
    <message>
        <source>kvm_vcpu_kick</source>
        <translation>kvm_vcpu_kick</translation>
    </message>
    <message>
        <source>HLT: kvm_vcpu_block</source>
        <translation>HLT：kvm_vcpu_block</translation>
    </message>
    <message>
        <source>vCPU wakes</source>
        <translation>vCPU 被唤醒</translation>
    </message>
    <message>
        <source>interrupt-window exiting</source>
        <translation>中断窗口退出</translation>
    </message>
    <message>
        <source>host timer</source>
        <translation>宿主机定时器</translation>
    </message>
    <message>
        <source>KVM_EXIT_*</source>
        <translation>KVM_EXIT_*</translation>
    </message>
    <message>
        <source>KVM_RUN</source>
        <translation>KVM_RUN</translation>
    </message>
    <message>
        <source>kvm_arch_pre_run: KVM_INTERRUPT</source>
        <translation>kvm_arch_pre_run：KVM_INTERRUPT</translation>
    </message>
    <message>
        <source>kvm_arch_pre_run</source>
        <translation>kvm_arch_pre_run</translation>
    </message>
    <message>
        <source>IRQ 0: the PIT&apos;s OUT</source>
        <translation>IRQ 0：PIT 的 OUT</translation>
    </message>
    <message>
        <source>IRQ 4: COM1</source>
        <translation>IRQ 4：COM1</translation>
    </message>
    <message>
        <source>IRQ line</source>
        <translation>IRQ 线</translation>
    </message>
    <message>
        <source>IRQ 4: COM1 (KVM_IRQ_LINE)</source>
        <translation>IRQ 4：COM1（KVM_IRQ_LINE）</translation>
    </message>
    <message>
        <source>IRQ line (KVM_IRQ_LINE)</source>
        <translation>IRQ 线（KVM_IRQ_LINE）</translation>
    </message>
    <message>
        <source>INTR: pic_read_irq</source>
        <translation>INTR：pic_read_irq</translation>
    </message>
    <message>
        <source>qemu_cpu_kick: SIG_IPI</source>
        <translation>qemu_cpu_kick：SIG_IPI</translation>
    </message>
    <message>
        <source>QEMU timer: the PIT</source>
        <translation>QEMU 定时器：PIT</translation>
    </message>
    <message>
        <source>QEMU timer</source>
        <translation>QEMU 定时器</translation>
    </message>
    <message>
        <source>fd handler</source>
        <translation>fd 处理函数</translation>
    </message>
    <message>
        <source>main_loop_wait</source>
        <translation>main_loop_wait</translation>
    </message>
    <message>
        <source>VGA store queued in the coalesced MMIO ring: no exit to QEMU</source>
        <translation>VGA 写入排入合并 MMIO 环：不退出到 QEMU</translation>
    </message>
    <message>
        <source>QEMU applies the queued VGA stores before this access</source>
        <translation>QEMU 在此次访问之前应用排队的 VGA 写入</translation>
    </message>
    <message>
        <source>virtio-mmio register access</source>
        <translation>virtio-mmio 寄存器访问</translation>
    </message>
    <message>
        <source>device access (no device box)</source>
        <translation>设备访问（图中无此设备框）</translation>
    </message>
    <message>
        <source>virtqueue kick (QueueNotify): completed in kvm.ko, the ioeventfd wakes the iothread</source>
        <translation>virtqueue 通知（QueueNotify）：在 kvm.ko 中完成，ioeventfd 唤醒 iothread</translation>
    </message>
    <message>
        <source>virtqueue kick (QueueNotify): completed in kvm.ko, the ioeventfd wakes the main loop</source>
        <translation>virtqueue 通知（QueueNotify）：在 kvm.ko 中完成，ioeventfd 唤醒主循环</translation>
    </message>
    <message>
        <source>the iothread</source>
        <translation>iothread 线程</translation>
    </message>
    <message>
        <source>dataplane start: QueueNotify becomes an ioeventfd</source>
        <translation>dataplane 启动：QueueNotify 改由 ioeventfd 处理</translation>
    </message>
    <message>
        <source>dataplane stop</source>
        <translation>dataplane 停止</translation>
    </message>
    <message>
        <source>the iothread runs the kicked queue</source>
        <translation>iothread 处理被通知的队列</translation>
    </message>
    <message>
        <source>the main loop runs the kicked queue</source>
        <translation>主循环处理被通知的队列</translation>
    </message>
    <message>
        <source>virtqueue kick (QueueNotify): an MMIO exit to the vCPU thread</source>
        <translation>virtqueue 通知（QueueNotify）：MMIO 退出到 vCPU 线程</translation>
    </message>
    <message>
        <source>virtqueue_pop: a request from the available ring</source>
        <translation>virtqueue_pop：从可用环取出一个请求</translation>
    </message>
    <message>
        <source>read from the disk image</source>
        <translation>从磁盘镜像读取</translation>
    </message>
    <message>
        <source>write to the disk image</source>
        <translation>写入磁盘镜像</translation>
    </message>
    <message>
        <source>used ring entry written</source>
        <translation>已写入已用环表项</translation>
    </message>
    <message>
        <source>used ring idx advanced</source>
        <translation>已用环 idx 前移</translation>
    </message>
    <message>
        <source>completion interrupt (used buffer notification)</source>
        <translation>完成中断（已用缓冲区通知）</translation>
    </message>
    <message>
        <source>completion interrupt through the irqfd (no exit, no BQL)</source>
        <translation>经 irqfd 的完成中断（无退出，不用 BQL）</translation>
    </message>
    <message>
        <source>irqfd: the GSI into kvm.ko&apos;s PIC</source>
        <translation>irqfd：GSI 接入 kvm.ko 的 PIC</translation>
    </message>
    <message>
        <source>virtio-mmio IRQ line</source>
        <translation>virtio-mmio IRQ 线</translation>
    </message>
    <message>
        <source>device status</source>
        <translation>设备状态</translation>
    </message>
    <message>
        <source>virtio-mmio register read</source>
        <translation>virtio-mmio 寄存器读</translation>
    </message>
    <message>
        <source>virtio-mmio register write</source>
        <translation>virtio-mmio 寄存器写</translation>
    </message>
    <message>
        <source>virtio error: the device needs a reset</source>
        <translation>virtio 错误：设备需要重置</translation>
    </message>
    <message>
        <source>{what}
(click: its panel)</source>
        <translation>{what}
（点击：打开其面板）</translation>
    </message>
    <message>
        <source>code page written</source>
        <translation>代码所在页被写入</translation>
    </message>
    <message>
        <source>a write changed instructions the CPU had decoded in page {frame:#x}: it decodes them again. Normal, not a bug: code that writes code (a loader, a patch).</source>
        <translation>一次写入改动了 CPU 在页 {frame:#x} 中已解码的指令：CPU 会重新解码它们。这很正常，不是错误：这是写代码的代码（加载程序、打补丁）。</translation>
    </message>
    <message>
        <source>▶ now</source>
        <translation>▶ 当前</translation>
    </message>
    <message>
        <source>done</source>
        <translation>已完成</translation>
    </message>
    <message>
        <source>tried, not done</source>
        <translation>已尝试，未完成</translation>
    </message>
    <message>
        <source>not tried</source>
        <translation>未尝试</translation>
    </message>
    <message>
        <source>Do</source>
        <translation>动手</translation>
    </message>
    <message>
        <source>Predict</source>
        <translation>预测</translation>
    </message>
    <message>
        <source>Modify the guest</source>
        <translation>修改客户机</translation>
    </message>
    <message>
        <source>Explain what you see</source>
        <translation>解释你看到的</translation>
    </message>
    <message>
        <source>Practice</source>
        <translation>练习</translation>
    </message>
    <message>
        <source>Step instruction (F11)</source>
        <translation>单步指令（F11）</translation>
    </message>
    <message>
        <source>Step event (F10)</source>
        <translation>单步事件（F10）</translation>
    </message>
    <message>
        <source>To VM exit (F8)</source>
        <translation>到虚拟机退出（F8）</translation>
    </message>
    <message>
        <source>To userspace exit (F7)</source>
        <translation>到用户态退出（F7）</translation>
    </message>
    <message>
        <source>Run to the end (F5)</source>
        <translation>运行到结束（F5）</translation>
    </message>
    <message>
        <source>Save a snapshot (Ctrl+S)</source>
        <translation>保存一个快照（Ctrl+S）</translation>
    </message>
    <message>
        <source>Open the saved snapshot (Ctrl+Shift+O)</source>
        <translation>打开保存的快照（Ctrl+Shift+O）</translation>
    </message>
    <message>
        <source>Run until the guest is about to execute {addr:#x} (a breakpoint there, then F5)</source>
        <translation>运行到客户机即将执行 {addr:#x} 处（在那里设断点，然后按 F5）</translation>
    </message>
    <message>
        <source>Step event (F10) until the event {kind} {where} (the event log shows each)</source>
        <translation>单步事件（F10），直到出现事件 {kind} {where}（事件日志逐个显示）</translation>
    </message>
    <message>
        <source>{what}, {n} times</source>
        <translation>{what}，{n} 次</translation>
    </message>
    <message>
        <source>Check</source>
        <translation>检查</translation>
    </message>
    <message>
        <source>check this step (Ctrl+Return)</source>
        <translation>检查此步骤（Ctrl+Return）</translation>
    </message>
    <message>
        <source>Hint</source>
        <translation>提示</translation>
    </message>
    <message>
        <source>reveal the next hint (Ctrl+H)</source>
        <translation>显示下一条提示（Ctrl+H）</translation>
    </message>
    <message>
        <source>Show solution</source>
        <translation>显示答案</translation>
    </message>
    <message>
        <source>No lesson is open: Lessons &gt; Choose a lesson… (Ctrl+L)</source>
        <translation>没有打开的课程：课程 &gt; 选择课程…（Ctrl+L）</translation>
    </message>
    <message>
        <source>the previous step (Alt+Left)</source>
        <translation>上一步骤（Alt+Left）</translation>
    </message>
    <message>
        <source>Previous step</source>
        <translation>上一步骤</translation>
    </message>
    <message>
        <source>the next step (Alt+Right)</source>
        <translation>下一步骤（Alt+Right）</translation>
    </message>
    <message>
        <source>Next step</source>
        <translation>下一步骤</translation>
    </message>
    <message>
        <source>progress not saved: {error}</source>
        <translation>学习进度未保存：{error}</translation>
    </message>
    <message>
        <source>Lesson {n}: {title}</source>
        <translation>第 {n} 课：{title}</translation>
    </message>
    <message>
        <source>{kind}; {status}</source>
        <translation>{kind}；{status}</translation>
    </message>
    <message>
        <source>Do these for me (from the step&apos;s start)</source>
        <translation>替我执行这些操作（从此步骤的起点开始）</translation>
    </message>
    <message>
        <source>the machine starts again and takes these actions; then press Check</source>
        <translation>机器重新开始并执行这些操作；然后按“检查”</translation>
    </message>
    <message>
        <source>Do it in the window (the toolbar&apos;s steps, Run, the panels), then press Check: it looks at the session as it stands now.</source>
        <translation>在窗口中动手操作（工具栏的单步、运行、各面板），然后按“检查”：它查看会话此刻的状态。</translation>
    </message>
    <message>
        <source>your prediction: a whole number</source>
        <translation>你的预测：一个整数</translation>
    </message>
    <message>
        <source>Answer before running: the machine waits at its start until you have checked your prediction.</source>
        <translation>先回答再运行：在你检查预测之前，机器停在起点等待。</translation>
    </message>
    <message>
        <source>Change the guest in the Guest source panel (left), then press Check: your text runs in a fresh machine of this step and the checks look at that run.</source>
        <translation>在（左侧的）客户机源代码面板中修改客户机，然后按“检查”：你的代码在此步骤的一台新机器上运行，检查项查看这次运行。</translation>
    </message>
    <message>
        <source>Start again from the original guest</source>
        <translation>从原始客户机重新开始</translation>
    </message>
    <message>
        <source>Choose every answer that is right.</source>
        <translation>选出所有正确的答案。</translation>
    </message>
    <message>
        <source>✓ right</source>
        <translation>✓ 正确</translation>
    </message>
    <message>
        <source>✗ not right</source>
        <translation>✗ 不正确</translation>
    </message>
    <message>
        <source>Seed:</source>
        <translation>种子：</translation>
    </message>
    <message>
        <source>the problem&apos;s number: the same seed gives everyone the same problem</source>
        <translation>题目的编号：同一个种子给每个人同一道题</translation>
    </message>
    <message>
        <source>New problem</source>
        <translation>换一道题</translation>
    </message>
    <message>
        <source>draw another problem (another seed)</source>
        <translation>抽取另一道题（另一个种子）</translation>
    </message>
    <message>
        <source>This problem cannot be made: {error}</source>
        <translation>无法生成这道题：{error}</translation>
    </message>
    <message>
        <source>Load its guest into the editor</source>
        <translation>把它的客户机载入编辑器</translation>
    </message>
    <message>
        <source>a whole number</source>
        <translation>一个整数</translation>
    </message>
    <message>
        <source>hexadecimal, e.g. 0x1000</source>
        <translation>十六进制，例如 0x1000</translation>
    </message>
    <message>
        <source>your answer</source>
        <translation>你的答案</translation>
    </message>
    <message>
        <source>Hint {i} of {n}:</source>
        <translation>提示 {i}/{n}：</translation>
    </message>
    <message>
        <source>✓ Right: this step is done.</source>
        <translation>✓ 正确：此步骤已完成。</translation>
    </message>
    <message>
        <source>✗ Off this time; the step counts as done once answered. The truth, and why:</source>
        <translation>✗ 这次没猜中；作答后这一步即算完成。真实结果和原因如下：</translation>
    </message>
    <message>
        <source>✗ Not yet:</source>
        <translation>✗ 还没有完成：</translation>
    </message>
    <message>
        <source>Solution:</source>
        <translation>答案：</translation>
    </message>
    <message>
        <source>the reference guest is in the editor (Guest source); Check it, or compare it with yours.</source>
        <translation>参考客户机已在编辑器（客户机源代码）中；检查它，或与你的比较。</translation>
    </message>
    <message>
        <source>Hint ({i}/{n})</source>
        <translation>提示（{i}/{n}）</translation>
    </message>
    <message>
        <source>Check shows the truth and why</source>
        <translation>“检查”会显示正确答案及原因</translation>
    </message>
    <message>
        <source>show the reference solution</source>
        <translation>显示参考答案</translation>
    </message>
    <message>
        <source>Answer the prediction first (Lesson panel, then Check): the machine waits at its start.</source>
        <translation>请先回答预测（课程面板，然后按“检查”）：机器停在起点等待。</translation>
    </message>
    <message>
        <source>Enter a whole number (e.g. 3) and press Check.</source>
        <translation>输入一个整数（例如 3），然后按“检查”。</translation>
    </message>
    <message>
        <source>Choose an answer, then press Check.</source>
        <translation>选择一个答案，然后按“检查”。</translation>
    </message>
    <message>
        <source>The check could not run: {error}</source>
        <translation>检查无法运行：{error}</translation>
    </message>
    <message>
        <source>step done</source>
        <translation>步骤已完成</translation>
    </message>
    <message>
        <source>not yet</source>
        <translation>尚未完成</translation>
    </message>
    <message>
        <source>Answer every question, then press Check.</source>
        <translation>回答每一个问题，然后按“检查”。</translation>
    </message>
    <message>
        <source>Put the reference solution into the editor? Your text there is replaced (save it first to keep it).</source>
        <translation>把参考答案放进编辑器？编辑器中你的代码会被替换（要保留请先保存）。</translation>
    </message>
    <message>
        <source>Choose a lesson</source>
        <translation>选择课程</translation>
    </message>
    <message>
        <source>No.</source>
        <translation>编号</translation>
    </message>
    <message>
        <source>Lesson</source>
        <translation>课程</translation>
    </message>
    <message>
        <source>Steps done</source>
        <translation>已完成步骤</translation>
    </message>
</context>
</TS>
