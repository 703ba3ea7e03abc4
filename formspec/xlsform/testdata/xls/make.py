"""Writes the .xls test workbooks with xlwt (Debian's python3-xlwt), and
what xlrd and pyxform read from them, for TestReadXLS:

    NAME.xls          the workbook, written by xlwt as Excel 97-2003 saves it
    NAME.cells.json   each cell's text as pyxform makes it from xlrd's value
    NAME.pyxform.xml  pyxform's XForm, when pyxform converts the workbook

Run from this folder: python3 make.py PYXFORM_CHECKOUT
"""
import datetime
import json
import sys

sys.path.append("/usr/lib/python3/dist-packages")
import xlrd  # noqa: E402
import xlwt  # noqa: E402

DATE = xlwt.easyxf(num_format_str="YYYY-MM-DD")
TIME = xlwt.easyxf(num_format_str="hh:mm:ss")
SHADED = xlwt.easyxf("pattern: pattern solid, fore_colour light_yellow")


def household():
    wb = xlwt.Workbook(encoding="utf-8")
    s = wb.add_sheet("survey")
    head = ["type", "name", "label::English (en)", "label::Français (fr)", "label::العربية (ar)",
            "hint::English (en)", "required", "constraint", "default", "purpose", "sensitivity"]
    for c, h in enumerate(head):
        s.write(0, c, h)
    rows = [
        ["start", "start", "", "", "", "", "", "", "", "operations", "level_1"],
        ["text", "hh_name", "Name of the household head", "Nom du chef de ménage", "اسم رب الأسرة",
         "As on the\u00a0ration card", True, "", "", "identification", "level_3"],
        ["integer", "members", "How many people live here?", "Combien de personnes vivent ici ?",
         "كم عدد الأشخاص؟", "Count children too", True, ". > 0 and . < 40", 4, "needs", "level_1"],
        ["decimal", "income", "", "Revenu mensuel", "الدخل الشهري", "", False, ". >= 0", 12.5,
         "needs", "level_2"],
        ["date", "visit", "Date of visit", "Date de la visite", "تاريخ الزيارة", "", "", "",
         datetime.date(2024, 3, 15), "operations", "level_1"],
        ["select_one district", "district", "District", "District", "المنطقة",
         "Long list: scroll down to find yours", "yes", "", "", "needs", "level_2"],
        ["select_multiple needs", "needs", "What does the household need most?", "Besoins prioritaires",
         "ما هي الاحتياجات؟", "", "", "", "", "needs", "level_1"],
        ["note", "", "Thank you — œuvre commune", "Merci — œuvre commune", "شكرا", "", "", "", "", "", ""],
    ]
    for r, row in enumerate(rows, start=1):
        for c, v in enumerate(row):
            if v == "":
                continue
            if isinstance(v, datetime.date):
                s.write(r, c, v, DATE)
            else:
                s.write(r, c, v)
    # A label written as rich text (two runs of fonts).
    bold = xlwt.easyfont("bold true")
    s.write_rich_text(4, 2, ["Monthly ", ("income", bold)])
    # Formatted empty cells down the sheet, as spreadsheet programs leave them.
    for r in range(len(rows) + 1, 3000):
        s.write(r, 0, "", SHADED)
    ch = wb.add_sheet("choices")
    for c, h in enumerate(["list_name", "name", "label::English (en)", "label::Français (fr)",
                           "label::العربية (ar)", "weight"]):
        ch.write(0, c, h)
    r = 1
    # Enough strings that the shared string table runs over CONTINUE records.
    for i in range(1, 151):
        ch.write(r, 0, "district")
        ch.write(r, 1, i)
        ch.write(r, 2, f"District number {i:03d} of the northern governorate, sub-area {i % 7}")
        ch.write(r, 3, f"District numéro {i:03d} du gouvernorat du Nord, secteur {i % 7} — œ")
        ch.write(r, 4, f"المنطقة رقم {i:03d} من المحافظة الشمالية")
        ch.write(r, 5, i / 8)
        r += 1
    for name, en, fr, ar in [("food", "Food", "Nourriture", "غذاء"), ("water", "Water", "Eau", "ماء"),
                             ("shelter", "Shelter", "Abri", "مأوى")]:
        for c, v in enumerate(["needs", name, en, fr, ar]):
            ch.write(r, c, v)
        r += 1
    st = wb.add_sheet("settings")
    for c, (h, v) in enumerate([("form_title", "Household visit"), ("form_id", "household_visit"),
                                ("version", 2024031501), ("default_language", "English (en)"),
                                ("legal_basis", "vital_interest")]):
        st.write(0, c, h)
        st.write(1, c, v)
    notes = wb.add_sheet("designer notes")
    notes.write(0, 0, "Kept out of the form: pyxform reads only its own sheets.")
    notes.sheet_visible = False
    notes.visibility = 1
    return wb


def dates1904():
    wb = xlwt.Workbook(encoding="utf-8")
    wb.dates_1904 = True
    s = wb.add_sheet("survey")
    for c, h in enumerate(["type", "name", "label", "default"]):
        s.write(0, c, h)
    s.write(1, 0, "date")
    s.write(1, 1, "d")
    s.write(1, 2, "A date")
    s.write(1, 3, datetime.date(2031, 12, 31), DATE)
    s.write(2, 0, "time")
    s.write(2, 1, "t")
    s.write(2, 2, "A time")
    s.write(2, 3, datetime.time(7, 30, 15), TIME)
    s.write(3, 0, "integer")
    s.write(3, 1, "big")
    s.write(3, 2, "A large whole number")
    s.write(3, 3, 123456789012)
    s.write(4, 0, "decimal")
    s.write(4, 1, "small")
    s.write(4, 2, "A small one")
    s.write(4, 3, 0.000125)
    return wb


def cells(path):
    """Each non-empty cell's text, as pyxform's xls reader makes it."""
    book = xlrd.open_workbook(path)
    out = {}
    for sh in book.sheets():
        grid = {}
        for r in range(sh.nrows):
            for c in range(sh.ncols):
                cell = sh.cell(r, c)
                v = cell.value
                if isinstance(v, str):
                    v = v.strip()
                if v == "" or v is None:
                    continue
                if cell.ctype == xlrd.XL_CELL_BOOLEAN:
                    t = "TRUE" if v else "FALSE"
                elif cell.ctype == xlrd.XL_CELL_NUMBER:
                    t = str(int(v)) if int(v) == v else str(v)
                elif cell.ctype == xlrd.XL_CELL_DATE:
                    tup = xlrd.xldate.xldate_as_tuple(v, book.datemode)
                    t = str(datetime.time(*tup[3:])) if tup[:3] == (0, 0, 0) else str(datetime.datetime(*tup))
                else:
                    t = str(v).replace("\u00a0", " ")
                grid[f"{r},{c}"] = t
        out[sh.name] = grid
    return out


def main():
    sys.path.insert(0, sys.argv[1])
    from pyxform.xls2xform import convert

    for name, make in [("household", household), ("dates1904", dates1904)]:
        make().save(name + ".xls")
        with open(name + ".cells.json", "w", encoding="utf-8") as f:
            json.dump(cells(name + ".xls"), f, ensure_ascii=False, indent=1, sort_keys=True)
        try:
            xml = convert(xlsform=name + ".xls", validate=False, pretty_print=True).xform
        except Exception as e:  # noqa: BLE001
            print(name, "pyxform refused:", e)
            continue
        with open(name + ".pyxform.xml", "w", encoding="utf-8") as f:
            f.write(xml)


main()
