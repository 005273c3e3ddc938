"""`make audit`: pip-audit on the installed environment, with a clear word when it could not look.

pip-audit asks PyPI's vulnerability API about every installed distribution. Where that API cannot be
reached (an offline machine, a registry mirror that serves packages but not their advisories) it
reports every package as "not found" instead of failing: this says so plainly and exits 2, so a
silent "no vulnerabilities" is never mistaken for an audit.
"""

import json
import subprocess
import sys

done = subprocess.run(
    [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--format", "json"], capture_output=True, text=True
)
try:
    report = json.loads(done.stdout)
except json.JSONDecodeError:
    print(done.stderr.strip() or done.stdout.strip(), file=sys.stderr)
    print("make audit: pip-audit failed before auditing anything (see above)", file=sys.stderr)
    sys.exit(2)
dependencies = report.get("dependencies", [])
audited = [d for d in dependencies if "skip_reason" not in d]
if dependencies and not audited:
    print(
        f"make audit: the advisory source (PyPI's vulnerability API) could not be reached from here: none of the "
        f"{len(dependencies)} installed packages was audited. Run it where pypi.org answers.",
        file=sys.stderr,
    )
    sys.exit(2)
found = [(d["name"], d["version"], v) for d in audited for v in d.get("vulns", [])]
for name, version, vuln in found:
    fixed = ", ".join(vuln.get("fix_versions", [])) or "no fix yet"
    print(f"{name} {version}: {vuln['id']} (fixed in {fixed})")
skipped = len(dependencies) - len(audited)
print(
    f"make audit: {len(audited)} packages audited, {len(found)} known vulnerabilities, {skipped} not auditable (not on PyPI)"
)
sys.exit(1 if found else 0)
