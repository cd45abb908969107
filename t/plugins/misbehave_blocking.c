/*
 * misbehave_blocking.c - misbehave.c with FMX_FLAG_BLOCKING, so that its
 * hooks run on the core's thread pool and mode=sleep can block.
 */
#define MISBEHAVE_NAME	"misbehave_blocking"
#define MISBEHAVE_FLAGS	FMX_FLAG_BLOCKING
#include "misbehave.c"
