"""The VMCS as data: field encodings (SDM "Field Encoding in VMCS", App. B; fact sheet 2.2,
2.3), VMREAD/VMWRITE widths, and the dump grouped by area like Linux's dump_vmcs()."""

from __future__ import annotations

import re

import pytest

from vmsim.hw.vmcs import F, Vmcs, field_info


@pytest.mark.parametrize(("field", "info"), [
    (F.GUEST_RIP, ("natural-width", "guest state", 15)),
    (F.VM_EXIT_REASON, ("32-bit", "exit information", 1)),
    (F.EPT_POINTER, ("64-bit", "control", 13)),
    (F.GUEST_ES_SELECTOR, ("16-bit", "guest state", 0)),
    (F.HOST_RIP, ("natural-width", "host state", 11)),
    (F.VMCS_LINK_POINTER, ("64-bit", "guest state", 0)),
    (F.CPU_BASED_VM_EXEC_CONTROL, ("32-bit", "control", 1)),
    (F.EXIT_QUALIFICATION, ("natural-width", "exit information", 0)),
])
def test_field_info(field: F, info: tuple[str, str, int]) -> None:
    assert field_info(field) == info


def test_high_access_of_a_64_bit_field() -> None:
    assert field_info(0x201B) == ("64-bit", "control", 13)  # EPT_POINTER_HIGH
    v = Vmcs()
    v.write(F.EPT_POINTER, 0x1122334455667788)
    assert v.read(0x201B) == 0x11223344
    v.write(0x201B, 0xAABBCCDD)
    assert v.read(F.EPT_POINTER) == 0xAABBCCDD55667788
    v.write(F.TSC_OFFSET, 0xFFFFFFFF)
    v.write(F.TSC_OFFSET + 1, 0xFFFFFFFF)
    assert v.read(F.TSC_OFFSET) == 0xFFFFFFFFFFFFFFFF


# The fact sheet's table 2.3, as (name, encoding).
FACT_SHEET = {
    "GUEST_ES_SELECTOR": 0x0800, "GUEST_TR_SELECTOR": 0x080E, "VMCS_LINK_POINTER": 0x2800,
    "GUEST_IA32_EFER": 0x2806, "GUEST_CS_LIMIT": 0x4802, "GUEST_TR_AR_BYTES": 0x4822,
    "GUEST_INTERRUPTIBILITY_INFO": 0x4824, "GUEST_ACTIVITY_STATE": 0x4826,
    "GUEST_SYSENTER_CS": 0x482A, "GUEST_CR0": 0x6800, "GUEST_CR3": 0x6802, "GUEST_CR4": 0x6804,
    "GUEST_IDTR_BASE": 0x6818, "GUEST_DR7": 0x681A, "GUEST_RSP": 0x681C, "GUEST_RIP": 0x681E,
    "GUEST_RFLAGS": 0x6820, "GUEST_PENDING_DBG_EXCEPTIONS": 0x6822, "HOST_TR_SELECTOR": 0x0C0C,
    "HOST_IA32_PAT": 0x2C00, "HOST_IA32_EFER": 0x2C02, "HOST_IA32_SYSENTER_CS": 0x4C00,
    "HOST_CR0": 0x6C00, "HOST_IA32_SYSENTER_EIP": 0x6C12, "HOST_RSP": 0x6C14, "HOST_RIP": 0x6C16,
    "IO_BITMAP_A": 0x2000, "IO_BITMAP_B": 0x2002, "MSR_BITMAP": 0x2004, "TSC_OFFSET": 0x2010,
    "EPT_POINTER": 0x201A, "PIN_BASED_VM_EXEC_CONTROL": 0x4000, "EXCEPTION_BITMAP": 0x4004,
    "PAGE_FAULT_ERROR_CODE_MATCH": 0x4008, "CR3_TARGET_COUNT": 0x400A,
    "VM_ENTRY_INTR_INFO_FIELD": 0x4016, "VM_ENTRY_INSTRUCTION_LEN": 0x401A,
    "SECONDARY_VM_EXEC_CONTROL": 0x401E, "CR0_GUEST_HOST_MASK": 0x6000,
    "CR4_READ_SHADOW": 0x6006, "CR3_TARGET_VALUE3": 0x600E, "GUEST_PHYSICAL_ADDRESS": 0x2400,
    "VM_INSTRUCTION_ERROR": 0x4400, "VM_EXIT_INTR_ERROR_CODE": 0x4406,
    "IDT_VECTORING_INFO_FIELD": 0x4408, "VM_EXIT_INSTRUCTION_LEN": 0x440C,
    "VMX_INSTRUCTION_INFO": 0x440E, "EXIT_QUALIFICATION": 0x6400, "GUEST_LINEAR_ADDRESS": 0x640A,
}


def test_encodings_match_the_fact_sheet() -> None:
    assert {name: F[name].value for name in FACT_SHEET} == FACT_SHEET


EXIT_INFO = {"GUEST_PHYSICAL_ADDRESS", "GUEST_LINEAR_ADDRESS", "EXIT_QUALIFICATION",
             "VM_INSTRUCTION_ERROR", "VM_EXIT_REASON", "VM_EXIT_INTR_INFO", "VM_EXIT_INTR_ERROR_CODE",
             "IDT_VECTORING_INFO_FIELD", "IDT_VECTORING_ERROR_CODE", "VM_EXIT_INSTRUCTION_LEN",
             "VMX_INSTRUCTION_INFO"}


@pytest.mark.parametrize("field", list(F), ids=[f.name for f in F])
def test_every_encoding_is_well_formed_and_in_its_area(field: F) -> None:
    enc = field.value
    assert enc & 1 == 0  # full access
    assert enc & 0x1000 == 0 and enc >> 15 == 0  # reserved bits
    width, area, _ = field_info(enc)
    name = field.name
    if name in EXIT_INFO:
        assert area == "exit information"
    elif name.startswith("GUEST_") or name == "VMCS_LINK_POINTER":
        assert area == "guest state"
    elif name.startswith("HOST_"):
        assert area == "host state"
    else:
        assert area == "control"
    if name.endswith("_SELECTOR"):
        assert width == "16-bit"
    if name.endswith(("_LIMIT", "_AR_BYTES")):
        assert width == "32-bit"
    if name.endswith(("_BASE", "_RIP", "_RSP")):
        assert width == "natural-width"


def test_write_truncates_to_the_field_width() -> None:
    v = Vmcs()
    v.write(F.GUEST_CS_SELECTOR, 0x12345)
    v.write(F.GUEST_CS_LIMIT, 0x1_FFFF_FFFF)
    v.write(F.VMCS_LINK_POINTER, (1 << 64) | 5)
    assert v.read(F.GUEST_CS_SELECTOR) == 0x2345
    assert v.read(F.GUEST_CS_LIMIT) == 0xFFFFFFFF
    assert v.read(F.VMCS_LINK_POINTER) == 5
    assert v.read(F.GUEST_DR7) == 0  # never written


def _dump() -> str:
    v = Vmcs()
    v.write(F.GUEST_RIP, 0xFFF0)
    v.write(F.GUEST_CS_SELECTOR, 0xF000)
    v.write(F.VMCS_LINK_POINTER, 0xFFFFFFFFFFFFFFFF)
    v.write(F.HOST_RSP, 0x1000)
    v.write(F.CPU_BASED_VM_EXEC_CONTROL, 0x84006172)
    v.write(F.VM_EXIT_REASON, 30)
    v.write(0x6C1E, 7)  # an encoding vmsim has no name for (a host natural-width field)
    return v.dump()


def test_dump_groups_fields_by_area() -> None:
    sections: dict[str, list[str]] = {}
    current = None
    for line in _dump().splitlines():
        m = re.fullmatch(r"\*\*\* (.+) \*\*\*", line)
        if m:
            current = m.group(1)
            sections[current] = []
        else:
            assert current is not None
            sections[current].append(line.split()[0])
    assert list(sections) == ["Guest state", "Host state", "Control", "Exit information"]
    assert sections["Guest state"] == ["GUEST_CS_SELECTOR", "VMCS_LINK_POINTER", "GUEST_RIP"]
    assert sections["Host state"] == ["HOST_RSP", "field"]
    assert sections["Control"] == ["CPU_BASED_VM_EXEC_CONTROL"]
    assert sections["Exit information"] == ["VM_EXIT_REASON"]


def test_dump_lines_carry_encoding_and_width_sized_value() -> None:
    lines = {ln.split()[0]: ln for ln in _dump().splitlines() if not ln.startswith("***")}
    assert re.search(r"GUEST_CS_SELECTOR\s+0x0802 = 0xf000$", lines["GUEST_CS_SELECTOR"])
    assert lines["VMCS_LINK_POINTER"].endswith("0x2800 = 0xffffffffffffffff")
    assert lines["GUEST_RIP"].endswith("0x681e = 0x000000000000fff0")  # natural width: 64-bit
    assert lines["VM_EXIT_REASON"].endswith("0x4402 = 0x0000001e")
    assert "field 0x6c1e" in lines["field"]
