#!/bin/sh
exec build/unit/test_filter_opt
