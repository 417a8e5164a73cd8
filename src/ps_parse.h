/*
 * ps_parse: pull parser for the Prometheus text format 0.0.4 and
 * OpenMetrics 1.0.0 (the shape of Prometheus's model/textparse).
 *
 * ps_parse_next() yields one entry at a time. Every view it exposes
 * (names, label names and values, help text, the raw series bytes) is
 * borrowed: it points into the caller's input buffer, or, only when the
 * input held escape sequences, into a scratch buffer owned by the parser.
 * Views stay valid until the next ps_parse_next()/ps_parse_skip_sample()/
 * ps_parse_reset()/ps_parse_free() call. Nothing is allocated per sample: the
 * parser owns a label array and a scratch buffer that grow to the largest line
 * seen and are reused.
 *
 * The input buffer is borrowed for the parser's whole use and need not be
 * NUL-terminated. Bad input is an error naming the 1-based line, never a
 * crash or an out-of-bounds read.
 *
 * Modes: default accepts and rejects what Prometheus's own parsers accept
 * and reject; strict adds the full OpenMetrics 1.0 rules (family grouping
 * and order, metadata placement, per-type sample rules, exemplar size).
 * strict only changes OpenMetrics parsing.
 */
#ifndef PS_PARSE_H
#define PS_PARSE_H

#include "ps_core.h"

#include <stdint.h>

enum ps_format {
    PS_FORMAT_TEXT = 0,       /* text/plain; version=0.0.4 */
    PS_FORMAT_OPENMETRICS = 1 /* application/openmetrics-text; 1.0.0 */
};

enum ps_entry {
    PS_ENTRY_SERIES = 1,
    PS_ENTRY_HELP,
    PS_ENTRY_TYPE,
    PS_ENTRY_UNIT,
    PS_ENTRY_COMMENT,
    PS_ENTRY_EOF /* end of input (text) or "# EOF" (OpenMetrics) */
};

enum ps_mtype {
    PS_MTYPE_UNKNOWN = 0, /* no TYPE line, or "unknown" */
    PS_MTYPE_COUNTER,
    PS_MTYPE_GAUGE,
    PS_MTYPE_HISTOGRAM,
    PS_MTYPE_GAUGEHISTOGRAM,
    PS_MTYPE_SUMMARY,
    PS_MTYPE_INFO,
    PS_MTYPE_STATESET,
    PS_MTYPE_UNTYPED /* text format's "untyped" */
};

struct ps_label_view {
    struct ps_str name;  /* decoded (quoted UTF-8 names unescaped) */
    struct ps_str value; /* decoded (escapes resolved) */
};

struct ps_exemplar_view {
    const struct ps_label_view *labels;
    size_t nlabels;
    double value;
    int has_ts;
    int64_t ts_ms;
};

/* Valid after ps_parse_next() returned PS_ENTRY_SERIES, and after
 * ps_parse_skip_sample() (raw, value and timestamp only: no name, no
 * labels, no exemplar). */
struct ps_series_view {
    struct ps_str name; /* metric name, decoded; never empty */
    /* The series as exposed, name and label block, bytes exactly as in the
     * input (no decoding): the scrape cache's key. */
    struct ps_str raw;
    const struct ps_label_view *labels; /* in input order, no __name__ */
    size_t nlabels;
    double value;
    int has_ts;
    int64_t ts_ms; /* milliseconds (OpenMetrics seconds are converted) */
    int has_exemplar;
    struct ps_exemplar_view exemplar;
    /* The type of the latest TYPE line, whatever family it named: what
     * Prometheus's parsers use to decide le/quantile normalization. */
    enum ps_mtype mtype;
};

/* Valid after PS_ENTRY_HELP, PS_ENTRY_TYPE or PS_ENTRY_UNIT. */
struct ps_meta_view {
    struct ps_str family; /* metric family name, decoded */
    enum ps_mtype type;   /* PS_ENTRY_TYPE only */
    struct ps_str text;   /* help text (decoded) or unit */
};

struct ps_parse_opts {
    enum ps_format format;
    int strict; /* full OpenMetrics 1.0 conformance */
};

struct ps_parser;

/*
 * Chooses the format from a Content-Type header value as Prometheus does:
 * application/openmetrics-text -> OpenMetrics; text/plain or empty (n == 0)
 * -> text. Parameters and case are handled like a media type. Anything else
 * is PS_ENOTSUP with a message naming the type. *out written on success.
 */
int ps_parse_format_of(const char *content_type, size_t n,
                       enum ps_format *out, struct ps_err *e);

/* Makes a parser over buf[0..len). Owned by the caller: ps_parse_free(). */
int ps_parse_new(struct ps_parser **out, const char *buf, size_t len,
                 const struct ps_parse_opts *o, struct ps_err *e);
/* Restarts on a new buffer with the same options, keeping grown storage. */
void ps_parse_reset(struct ps_parser *p, const char *buf, size_t len);
void ps_parse_free(struct ps_parser *p); /* NULL-safe */

/*
 * Advances to the next entry and writes its kind to *entry. Returns PS_OK,
 * or PS_EPARSE with "line N: what is wrong" in e, or PS_ENOMEM. After an
 * error or PS_ENTRY_EOF, further calls return the same result.
 */
int ps_parse_next(struct ps_parser *p, enum ps_entry *entry,
                  struct ps_err *e);

const struct ps_series_view *ps_parse_series(const struct ps_parser *p);
const struct ps_meta_view *ps_parse_meta(const struct ps_parser *p);
/* The comment text (after "# ") for PS_ENTRY_COMMENT. */
struct ps_str ps_parse_comment(const struct ps_parser *p);
size_t ps_parse_lineno(const struct ps_parser *p); /* 1-based line */

/*
 * Sample lines for a caller that knows series by their raw bytes (the
 * scrape cache), text format only: it can skip the label tokenization
 * of a line whose series it already knows.
 *
 * ps_parse_peek_sample() looks at the line at the current position and
 * consumes nothing. It returns 1 when the line has the form
 * `<series> <value>` or `<series> <value> <timestamp>` (blanks between,
 * blanks allowed at the end, the value and the timestamp valid exactly as
 * ps_parse_next() reads them), splitting it from its end: sl->raw is the
 * series bytes, sl->value and the timestamp are parsed. It returns 0 for
 * anything else (a comment, a blank line, a leading blank, a quoted
 * string running over the line, a value or timestamp ps_parse_next()
 * would reject or split otherwise, OpenMetrics, an ended parser): call
 * ps_parse_next().
 *
 * The split is guessed from the end, so sl->raw is what ps_parse_next()
 * would report only if it is known: if it equals the raw bytes of a
 * series that ps_parse_next() returned before, from this body or another
 * one (in either format), then ps_parse_next() on this line would return
 * exactly that raw, sl->value and the timestamp, without a parse error. A
 * caller that finds sl->raw among the raw bytes it saw calls
 * ps_parse_skip_sample(); otherwise it calls ps_parse_next(), which parses
 * the same line in full.
 */
struct ps_sample_line {
    struct ps_str raw; /* borrowed from the input */
    double value;
    int has_ts;
    int64_t ts_ms;     /* 0 without a timestamp */
    const char *next;  /* private: the start of the next line */
};
int ps_parse_peek_sample(struct ps_parser *p, struct ps_sample_line *sl);

/*
 * Consumes the line that ps_parse_peek_sample() just returned 1 for, as
 * if ps_parse_next() had returned it as PS_ENTRY_SERIES: line numbers go
 * on, and ps_parse_series() gives its raw, value and timestamp, with no
 * name (empty), labels or exemplar. PS_OK, or PS_ESTATE (nothing done)
 * when sl is not the peek of the current position.
 */
int ps_parse_skip_sample(struct ps_parser *p, const struct ps_sample_line *sl);

const char *ps_mtype_name(enum ps_mtype t); /* "counter", ... */

/*
 * Prometheus 3.x ingests the `le` label of histograms and the `quantile`
 * label of summaries in canonical OpenMetrics float form ("1" -> "1.0",
 * "0" -> "0.0", "1e-5" -> "1e-05"), the type being the latest TYPE line's.
 * If label l under type t needs rewriting, writes the new value into buf
 * (PS_FLOAT_FMT_MAX bytes), points *out at it and returns 1; otherwise
 * returns 0 (values that do not parse as Go floats are kept as exposed).
 * Costly next to parsing: call it when building a series' labels for the
 * first time (a scrape cache miss), not per sample.
 */
int ps_parse_normalize_label(enum ps_mtype t, const struct ps_label_view *l,
                             char *buf, struct ps_str *out);

#endif
