#!/bin/sh
exec build/unit/test_smtp_parse
