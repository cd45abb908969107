/*
 * check.h - `frontmx check`: one message through the filter chain and
 * policy, offline (DNS is still real).  Returns the process exit code.
 */
#ifndef FRONTMX_CHECK_H
#define FRONTMX_CHECK_H

int	check_main(int argc, char *argv[]);

#endif
