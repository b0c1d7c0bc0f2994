/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harvester/log.h"

static const char *prefix = "harvester";
static int max_level = LOG_INFO;
static int use_prio = -1;   /* stderr is the journal: prefix lines with <N> */

void log_set_prefix(const char *prog) { prefix = prog; }
void log_set_max_level(int level) { max_level = level; }

int log_full(int level, int error, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (level > max_level)
		return error < 0 ? error : -error;
	if (use_prio < 0)
		use_prio = getenv("JOURNAL_STREAM") != NULL;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	char pr[8] = "";
	if (use_prio)
		snprintf(pr, sizeof(pr), "<%d>", level);
	fprintf(stderr, "%s%s: %s%s%s\n", pr, prefix, msg, error ? ": " : "",
		error ? strerror(abs(error)) : "");
	return error < 0 ? error : -error;
}
