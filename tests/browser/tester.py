"""Drives the rule tester page of `dyngroups serve` in headless Chromium.

    python3 tests/browser/tester.py URL SCREENSHOT.png

URL is the page the server printed (the example data loaded, with its
rules file). It types a rule with a typo and waits for the caret message,
fixes it and waits for the count, explains a user, and saves a screenshot.
Exits non-zero, saying which step failed, when the page does not do so.
"""

import sys

from playwright.sync_api import expect, sync_playwright

# As root, in a sandbox, on a machine with no network but the registries:
# the flags keep Chromium from reaching for the network at start.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# CI machines are slow and busy: wait longer than the default 5 s.
expect.set_options(timeout=30_000)


def main(url: str, screenshot: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        expect(page.locator("#about")).to_contain_text("12 users")

        rule = page.locator("#rule")
        # A typo: the caret message names the field and what would be right.
        rule.click()
        page.keyboard.type('departmnt == "Sales"')
        diagnostics = page.locator("#diagnostics")
        expect(diagnostics).to_contain_text("unknown field `departmnt`")
        expect(diagnostics).to_contain_text("^^^^^^^^^")
        expect(diagnostics).to_contain_text("did you mean `department`?")

        # Fixed, with completion: the count and a sample of members.
        rule.fill("")
        page.keyboard.type("depa")
        expect(page.locator("#completions li").first).to_contain_text("department")
        page.keyboard.press("Tab")
        page.keyboard.type(' == "Sales" and in_branch("EMEA")')
        expect(rule).to_have_value('department == "Sales" and in_branch("EMEA")')
        expect(diagnostics).to_have_text("")
        expect(page.locator("#count")).to_contain_text("of 12 users")
        expect(page.locator("#count strong")).to_have_text("4")
        expect(page.locator("#sample tbody tr")).to_have_count(4)

        # Explain a user: the tree, each node with its verdict and values.
        page.locator("#explain-user").fill("1001")
        page.get_by_role("button", name="Explain").click()
        expect(page.locator("#explain-verdict")).to_contain_text("User 1001 is caught by the rule")
        expect(page.locator("#explain-tree")).to_contain_text('department = "Sales"')

        # A group of the rules file, evaluated now.
        page.get_by_role("button", name="sales_emea").click()
        expect(page.locator("#group-detail")).to_contain_text("4 members")

        page.screenshot(path=screenshot, full_page=True)
        browser.close()
        if errors:
            sys.exit(f"the page raised: {errors}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
