/*
 * mosquitto_log_printf for mosquitto plugins loaded unchanged (src/plugin/cabi/mosq.rs): the
 * one exported function that is variadic, which stable Rust cannot define. It formats and
 * hands the text to midge's log.
 */
#include <stdarg.h>
#include <stdio.h>

void midge_mosq_log(int level, const char *text);

void mosquitto_log_printf(int level, const char *fmt, ...)
{
	char text[1024];
	va_list va;
	if (fmt == NULL) {
		return;
	}
	va_start(va, fmt);
	vsnprintf(text, sizeof(text), fmt, va);
	va_end(va);
	midge_mosq_log(level, text);
}
