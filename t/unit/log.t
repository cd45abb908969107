#!/bin/sh
exec build/unit/test_log
