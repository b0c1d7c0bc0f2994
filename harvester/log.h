/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Logging for the two programs (never for the library layers): to stderr,
 * with sd-daemon priority prefixes when stderr is the journal. */
#pragma once

#include <syslog.h>

void log_set_prefix(const char *prog);
void log_set_max_level(int level);
/* Log at level; if error != 0 append ": strerror(-error)". Returns error
 * (negative) so callers can write "return log_error_errno(r, ...)". */
int log_full(int level, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_debug(...)   log_full(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, 0, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...)   log_full(LOG_ERR, (e), __VA_ARGS__)
