#!/bin/sh
exec build/unit/test_milter_proto
