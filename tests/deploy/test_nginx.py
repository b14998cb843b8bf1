#!/usr/bin/python3
"""nginx access logs: no nginx configuration the project ships or shows (deploy/, k8s/, the
code blocks of README.md and docs/) logs query strings, where ?token= carries a JWT or the API
key. The self-checks break the shipped deploy/nginx/herald.conf one way at a time and require
the checker to name it."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploycheck as dc  # noqa: E402

CONF = os.path.join("deploy", "nginx", "herald.conf")


class AccessLogs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.texts = dict(dc.nginx_texts())
        cls.conf = cls.texts[CONF]

    def test_no_config_logs_query_strings(self):
        self.assertIn("log_format herald", self.conf)
        for name, text in self.texts.items():
            with self.subTest(name=name):
                self.assertEqual(dc.nginx_log_problems(text, name), [])

    def test_rejects_formats_that_log_query_strings(self):
        fmt = "log_format herald '$remote_addr"
        self.assertIn(fmt, self.conf)
        for var in ("$request", "$request_uri", "$args", "$query_string", "$arg_token",
                    "${request}"):
            with self.subTest(var=var):
                broken = self.conf.replace(fmt, f"{fmt} {var}")
                name = var.strip("${}")
                self.assertIn(f"x: log_format herald logs ${name}, query string included",
                              dc.nginx_log_problems(broken, "x"))
        for var in ("$request_method", "$request_time", "$request_length", "$uri", "$arguments"):
            with self.subTest(var=var):
                self.assertEqual(dc.nginx_log_problems(self.conf.replace(fmt, f"{fmt} {var}"),
                                                       "x"), [])

    def test_rejects_logs_in_the_combined_format(self):
        line = "access_log /dev/stdout herald;"
        self.assertIn(line, self.conf)
        cases = [
            ("access_log /dev/stdout;", "format combined"),
            ("access_log /dev/stdout combined;", "format combined"),
            ("access_log /dev/stdout buffer=32k;", "format combined"),
            ("access_log /dev/stdout main;", "format main, not a log_format of this file"),
            ("", "an http block without access_log"),
        ]
        for new, needle in cases:
            with self.subTest(new=new):
                problems = dc.nginx_log_problems(self.conf.replace(line, new), "x")
                self.assertTrue(any(needle in p for p in problems), problems)
        self.assertEqual(dc.nginx_log_problems(self.conf.replace(line, "access_log off;"), "x"),
                         [])

    def test_reads_ingress_nginx_settings_and_doc_examples(self):
        cm = "data:\n  log-format-upstream: '$remote_addr \"$request\" $status'\n"
        self.assertEqual(dc.nginx_log_problems(cm, "x"),
                         ["x: log-format-upstream logs $request, query string included"])
        names = [n for n, _ in dc.nginx_texts()]
        self.assertIn(CONF, names)
        self.assertTrue(any(n.startswith("docs/DEPLOY.md block") for n in names), names)


if __name__ == "__main__":
    unittest.main(verbosity=2)
