"""How the gateway ships, checked without Docker or a running systemd: `make install` with
DESTDIR and PREFIX, the systemd unit (systemd-analyze verify where available), the man pages
(rendered by man -l without a warning, every configuration key documented), the Dockerfile
(its build stage's steps repeated in a scratch directory: the binary has its migrations and
every library it links is in the runtime stage's packages), the compose file and the
Prometheus and Grafana provisioning (they parse and point at files and data sources that
exist), and the sample configurations of the image and the compose stack (they pass -t)."""

import glob
import json
import os
import re
import shutil
import subprocess
import unittest

from harness import BUILD, GatewayTest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import yaml
except ImportError:  # make deps installs python3-yaml
    yaml = None


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def clean_env():
    """The environment without what an outer make hands down: `make asan` runs the tests with
    BUILD=build-asan and SAN=1 on its command line, which make passes to everything below it in
    MAKEFLAGS and as environment variables. The scratch builds must be plain ones."""
    env = dict(os.environ)
    flags = env.get("MAKEFLAGS", "")
    cmdline = flags.split(" -- ", 1)[1] if " -- " in flags else ""
    for word in cmdline.split() + ["BUILD=", "SAN=", "PREFIX=", "DESTDIR="]:
        if "=" in word:
            env.pop(word.split("=", 1)[0], None)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


def dockerfile_stages():
    """[(name, [(instruction, argument text)])] of docker/Dockerfile, continuation lines
    joined."""
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, arg = line.partition(" ")
        if instr == "FROM":
            m = re.search(r"\bAS\s+(\S+)", arg, re.I)
            stages.append((m.group(1) if m else "runtime", [(instr, arg)]))
        else:
            stages[-1][1].append((instr, arg.strip()))
    return stages


def apt_packages(steps):
    """The packages of the stage's apt-get install lines."""
    pkgs = []
    for instr, arg in steps:
        if instr == "RUN" and "apt-get install" in arg:
            seg = arg.split("apt-get install", 1)[1].split("&&")[0]
            pkgs += [w for w in seg.split() if not w.startswith("-")]
    return pkgs


def needed_packages(binary):
    """The Debian packages of the shared libraries BINARY links directly (DT_NEEDED)."""
    out = run(["readelf", "-d", binary], check=True).stdout
    libs = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)
    ldd = run(["ldd", binary], check=True).stdout
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    pkgs = set()
    for lib in libs:
        path = paths.get(lib)
        assert path, "ldd does not resolve %s" % lib
        r = run(["dpkg", "-S", path])
        if r.returncode != 0:
            r = run(["dpkg", "-S", os.path.realpath(path)])
        assert r.returncode == 0, "no package owns %s" % path
        pkgs.add(r.stdout.split(":")[0])
    return pkgs


class InstallTest(GatewayTest):
    def install(self, destdir, prefix):
        return run(["make", "--no-print-directory", "-C", ROOT, "install", "BUILD=" + BUILD,
                    "DESTDIR=" + destdir, "PREFIX=" + prefix], env=clean_env())

    def test_make_install_honours_destdir_and_prefix(self):
        dest = os.path.join(self.tmp, "dest")
        r = self.install(dest, "/usr")
        self.assertEqual(r.returncode, 0, r.stderr)
        got = sorted(os.path.relpath(p, dest) for p in glob.glob(dest + "/**", recursive=True)
                     if os.path.isfile(p))
        want = sorted(
            ["usr/sbin/anymate-gateway", "etc/anymate-gateway/gateway.conf",
             "etc/logrotate.d/anymate-gateway", "lib/systemd/system/anymate-gateway.service",
             "usr/share/man/man8/anymate-gateway.8", "usr/share/man/man5/anymate-gateway.conf.5",
             "usr/share/anymate-gateway/examples/gateway.conf",
             "usr/share/anymate-gateway/examples/minimal.conf",
             "usr/share/anymate-gateway/sql/roles/analyst_readonly.sql"] +
            ["usr/share/anymate-gateway/sql/migrations/" + os.path.basename(p)
             for p in glob.glob(os.path.join(ROOT, "sql/migrations/*.sql"))] +
            ["usr/share/anymate-gateway/dashboards/" + os.path.basename(p)
             for p in glob.glob(os.path.join(ROOT, "docker/grafana/dashboards/*.json"))])
        self.assertEqual(got, want)
        self.assertTrue(os.access(os.path.join(dest, "usr/sbin/anymate-gateway"), os.X_OK))
        with open(os.path.join(dest, "lib/systemd/system/anymate-gateway.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/sbin/anymate-gateway -c /etc/anymate-gateway/gateway.conf",
                      unit)
        self.assertIn("ExecStartPre=/usr/sbin/anymate-gateway -t -c", unit)
        self.assertIn("ExecReload=/bin/kill -HUP $MAINPID", unit)
        for key in ("ProtectSystem=strict", "DynamicUser=yes", "StateDirectory=anymate-gateway",
                    "LimitNOFILE="):
            self.assertIn(key, unit)
        self.assertNotIn("@", unit.replace("@system-service", ""))
        # an operator's configuration survives a reinstall
        conf = os.path.join(dest, "etc/anymate-gateway/gateway.conf")
        with open(conf, "w") as f:
            f.write("; mine\n")
        self.assertEqual(self.install(dest, "/usr").returncode, 0)
        with open(conf) as f:
            self.assertEqual(f.read(), "; mine\n")
        # PREFIX=/usr/local puts the configuration under it
        dest2 = os.path.join(self.tmp, "dest2")
        self.assertEqual(self.install(dest2, "/usr/local").returncode, 0)
        self.assertTrue(os.path.isfile(os.path.join(
            dest2, "usr/local/etc/anymate-gateway/gateway.conf")))
        self.assertTrue(os.path.isfile(os.path.join(dest2, "usr/local/sbin/anymate-gateway")))

    @unittest.skipIf(shutil.which("systemd-analyze") is None, "no systemd-analyze here")
    def test_systemd_unit_verifies(self):
        prefix = os.path.join(self.tmp, "prefix")  # real paths, so ExecStart exists
        self.assertEqual(self.install("", prefix).returncode, 0)
        unit = os.path.join(prefix, "lib/systemd/system/anymate-gateway.service")
        r = run(["systemd-analyze", "verify", "--man=no", "--generators=no", unit])
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        # and it can fail: a misspelt key is reported
        with open(unit) as f:
            text = f.read()
        with open(unit, "w") as f:
            f.write(text.replace("DynamicUser=", "DynamicUsr="))
        r = run(["systemd-analyze", "verify", "--man=no", "--generators=no", unit])
        self.assertIn("Unknown key 'DynamicUsr'", r.stderr)

    @unittest.skipIf(shutil.which("man") is None, "no man here")
    def test_man_pages_render_and_document_every_key(self):
        for page in ("anymate-gateway.8", "anymate-gateway.conf.5"):
            path = os.path.join(ROOT, "docs", "man", page)
            r = run(["man", "--warnings", "-l", path], env=dict(os.environ, LC_ALL="C.UTF-8",
                                                                 MANWIDTH="80"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stderr, "", page)
            self.assertIn("NAME", r.stdout)
        with open(os.path.join(ROOT, "config", "gateway.conf")) as f:
            keys = set(re.findall(r"^(?:# |; Example: |;   )([a-z_]+) = ", f.read(), re.M))
        with open(os.path.join(ROOT, "docs", "man", "anymate-gateway.conf.5")) as f:
            page = f.read().replace("\\", "")
        missing = sorted(k for k in keys if not re.search(r"\b%s\b" % k, page))
        self.assertEqual(missing, [])
        self.assertGreater(len(keys), 50)


class ReadmeTest(unittest.TestCase):
    def test_every_error_code_in_the_sources_is_in_the_readme(self):
        codes = set()
        for path in glob.glob(os.path.join(ROOT, "gateway", "*.c")):
            with open(path) as f:
                codes.update(re.findall(
                    r'"((?:request|route|upstream|gateway|audit|internal|finishrun|task|json|'
                    r'kpi|policy|auth|client)\.[a-z_]+)"', f.read()))
        codes = {c for c in codes if not c.endswith((".h", ".c"))}
        self.assertGreater(len(codes), 50)
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        self.assertEqual(sorted(c for c in codes if "`%s`" % c not in readme), [])

    def test_the_readme_points_at_nothing_outside_the_repository(self):
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        for ref in ("design.md", "anymate-api.md", "style.md", "../shared"):
            self.assertNotIn(ref, readme)


class DockerTest(GatewayTest):
    def test_dockerfile_build_stage_gives_a_binary_with_migrations_and_its_libraries(self):
        stages = dict(dockerfile_stages())
        self.assertEqual(set(stages), {"build", "mock", "runtime"})
        build = stages["build"]
        self.assertIn("debian:bookworm", build[0][1])
        # the build stage's packages are what this machine has (the same steps as CI)
        for p in apt_packages(build):
            r = run(["dpkg-query", "-W", "-f=${Status}", p])
            self.assertIn("ok installed", r.stdout, p)
        # its COPY and RUN steps, in a scratch directory
        scratch = os.path.join(self.tmp, "src")
        os.mkdir(scratch)
        for instr, arg in build:
            if instr == "COPY":
                src, dst = arg.split()
                target = os.path.join(scratch, dst)
                if os.path.isdir(os.path.join(ROOT, src)):
                    shutil.copytree(os.path.join(ROOT, src), target)
                else:
                    shutil.copy(os.path.join(ROOT, src), target)
            elif instr == "RUN" and not arg.startswith("apt-get"):
                r = run(["sh", "-c", arg], cwd=scratch, timeout=600, env=clean_env())
                self.assertEqual(r.returncode, 0, r.stdout[-2000:] + r.stderr[-2000:])
        binary = os.path.join(scratch, "build", "anymate-gateway")
        out = run([binary, "--version"], check=True).stdout
        n = len(glob.glob(os.path.join(ROOT, "sql/migrations/*.sql")))
        self.assertIn("migrations embedded: %d (latest" % n, out)
        # every library the binaries link comes with the stage that runs them
        for stage, name in (("runtime", "anymate-gateway"), ("mock", "anymate-mock")):
            missing = needed_packages(os.path.join(scratch, "build", name)) - \
                set(apt_packages(stages[stage])) - {"libc6"}
            self.assertEqual(missing, set(), stage)
        runtime = stages["runtime"]
        self.assertIn("debian:bookworm-slim", runtime[0][1])
        instrs = [i for i, _ in runtime]
        self.assertIn("USER", instrs)
        self.assertIn("HEALTHCHECK", instrs)
        self.assertIn("VOLUME", instrs)
        self.assertIn("/livez", dict(runtime)["HEALTHCHECK"])
        for instr, arg in runtime:
            if instr == "COPY" and "--from" not in arg:
                self.assertTrue(os.path.exists(os.path.join(ROOT, arg.split()[0])), arg)

    def test_a_binary_without_migrations_refuses_to_migrate(self):
        scratch = os.path.join(self.tmp, "src")
        os.mkdir(scratch)
        shutil.copy(os.path.join(ROOT, "Makefile"), scratch)
        shutil.copytree(os.path.join(ROOT, "gateway"), os.path.join(scratch, "gateway"))
        r = run(["make", "build/anymate-gateway"], cwd=scratch, timeout=600, env=clean_env())
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        binary = os.path.join(scratch, "build", "anymate-gateway")
        self.assertIn("migrations embedded: none", run([binary, "--version"]).stdout)
        conf = os.path.join(self.tmp, "m.conf")
        with open(conf, "w") as f:
            f.write("[upstream]\nclient_id = acme\n[audit]\ndatabase = host=127.0.0.1 port=1\n")
        r = run([binary, "migrate", "-c", conf])
        self.assertEqual(r.returncode, 1)
        self.assertIn("no migrations embedded", r.stderr)

    def test_shipped_container_configurations_pass_the_check(self):
        for name in ("gateway.conf", "compose-gateway.conf"):
            with open(os.path.join(ROOT, "docker", name)) as f:
                text = f.read()
            # the container's spool directory does not exist here: check against a scratch one
            text = text.replace("/var/lib/anymate-gateway/spool", os.path.join(self.tmp, "sp"))
            path = os.path.join(self.tmp, name)
            with open(path, "w") as f:
                f.write(text)
            r = run([os.path.join(BUILD, "anymate-gateway"), "-t", "-c", path])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("listen = 0.0.0.0:8080", text)  # not loopback inside a container

    @unittest.skipIf(yaml is None, "python3-yaml missing")
    def test_compose_and_provisioning_parse_and_point_at_what_exists(self):
        docker = os.path.join(ROOT, "docker")
        with open(os.path.join(docker, "compose.yml")) as f:
            compose = yaml.safe_load(f)
        services = compose["services"]
        self.assertTrue({"postgres", "migrate", "gateway", "mock", "prometheus",
                         "grafana"} <= set(services))
        for name, svc in services.items():
            for vol in svc.get("volumes", []):
                src = vol.split(":")[0]
                if src.startswith("."):
                    self.assertTrue(os.path.exists(os.path.join(docker, src)), (name, src))
            build = svc.get("build")
            if build:
                self.assertTrue(os.path.isfile(os.path.join(docker, build["context"],
                                                            build["dockerfile"])))
        self.assertEqual(services["migrate"]["command"][0], "migrate")
        with open(os.path.join(docker, "prometheus", "prometheus.yml")) as f:
            prom = yaml.safe_load(f)
        self.assertEqual(prom["scrape_configs"][0]["static_configs"][0]["targets"],
                         ["gateway:9090"])
        with open(os.path.join(docker, "grafana/provisioning/datasources/datasources.yml")) as f:
            uids = {d["uid"] for d in yaml.safe_load(f)["datasources"]}
        with open(os.path.join(docker, "grafana/provisioning/dashboards/dashboards.yml")) as f:
            yaml.safe_load(f)
        for path in glob.glob(os.path.join(docker, "grafana/dashboards/*.json")):
            with open(path) as f:
                dash = json.load(f)
            for panel in dash["panels"]:
                for t in panel["targets"]:
                    self.assertIn(t["datasource"]["uid"], uids, (path, panel["title"]))


if __name__ == "__main__":
    unittest.main()
