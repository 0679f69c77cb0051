package chaussettes.jvm;

import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * The detector's fast path (sparkparse.FAST_COMBINED) as a scanner over a line's bytes: the 18
 * groups that the regular expression captures from a typical Combined line, or null where the
 * fast path does not take the line (the full rules then decide, as for any line it refuses).
 *
 * <p>It takes the line as it comes (Kafka's bytes) and does the fast path's preparation too: a
 * line it takes is well-formed UTF-8 (as Spark's is_valid_utf8), at most MAX_LINE_BYTES long,
 * has no blank at either end (so it is its own trimmed self), does not start with '{' and has
 * no U+0001 (what the expression's evaluation joins groups with). Spark then neither checks the
 * encoding nor decodes the line into a Java String, and the groups are views on the line's bytes.
 *
 * <p>The expression is anchored at both ends and its quantifiers never backtrack (possessive,
 * or followed by a character they cannot take), so one left-to-right pass decides it: each
 * step below is one element of the expression, in order. Every character the expression
 * names is ASCII, and a byte of a multi-byte UTF-8 sequence is never ASCII: scanning bytes
 * takes what scanning characters takes. A group that does not take part (query, referrer,
 * user agent) is "", as regexp_replace writes it. tests/test_sparkparse.py checks the whole
 * parse against the expression's on the test corpus and on mutated lines.
 *
 * <p>Why: the expression, evaluated by java.util.regex, plus the split of its result were
 * about a third of the detector's JVM time (profiled); then, with a scanner over Java Strings,
 * checking, decoding and re-encoding the line were a sixth of it.
 */
public final class FastCombined implements UDF1<byte[], UTF8String[]> {
    private static final long serialVersionUID = 1L;
    static final int GROUPS = 18;
    /** logformat.MAX_LINE_LENGTH (characters): a line of at most as many bytes is within it. */
    static final int MAX_LINE_BYTES = 16384;

    /** For the tests: the limit above, to compare with logformat's. */
    public static int maxLineBytes() {
        return MAX_LINE_BYTES;
    }

    @Override
    public UTF8String[] call(byte[] line) {
        return line == null ? null : parse(line);
    }

    static UTF8String[] parse(byte[] s) {
        final int n = s.length;
        if (n == 0 || n > MAX_LINE_BYTES || blank(s[0]) || blank(s[n - 1]) || s[0] == '{' || !plain(s)) {
            return null;
        }
        // (?!"?[0-9]{4}-[0-9]{2}-[0-9]{2}): what logformat reads as CSV
        int c = s[0] == '"' ? 1 : 0;
        if (digits(s, c, 4) && is(s, c + 4, '-') && digits(s, c + 5, 2) && is(s, c + 7, '-') && digits(s, c + 8, 2)) {
            return null;
        }
        UTF8String[] g = new UTF8String[GROUPS];
        // ([^ ]++) [^ ]++ [^ ]++ \[
        int i = 0;
        int e = runNotSpace(s, i);
        if (e == i || !is(s, e, ' ')) return null;
        g[0] = part(s, i, e);
        for (int k = 0; k < 2; k++) {
            i = e + 1;
            e = runNotSpace(s, i);
            if (e == i || !is(s, e, ' ')) return null;
        }
        i = e + 1;
        if (!is(s, i, '[')) return null;
        i++;
        // (\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\] "
        if (i + 29 > n) return null;
        if (!(digits(s, i, 2) && s[i + 2] == '/' && upper(s[i + 3]) && lower(s[i + 4])
                && lower(s[i + 5]) && s[i + 6] == '/' && digits(s, i + 7, 4) && s[i + 11] == ':'
                && digits(s, i + 12, 2) && s[i + 14] == ':' && digits(s, i + 15, 2) && s[i + 17] == ':'
                && digits(s, i + 18, 2) && s[i + 20] == ' ' && (s[i + 21] == '+' || s[i + 21] == '-')
                && digits(s, i + 22, 4) && s[i + 26] == ']' && s[i + 27] == ' ' && s[i + 28] == '"')) {
            return null;
        }
        g[1] = part(s, i, i + 2);
        g[2] = part(s, i + 3, i + 6);
        g[3] = part(s, i + 7, i + 11);
        g[4] = part(s, i + 12, i + 14);
        g[5] = part(s, i + 15, i + 17);
        g[6] = part(s, i + 18, i + 20);
        g[7] = part(s, i + 21, i + 22);
        g[8] = part(s, i + 22, i + 24);
        g[9] = part(s, i + 24, i + 26);
        i += 29;
        // ([A-Za-z][A-Za-z0-9_-]*+) : the method, then a space
        if (i >= n || !letter(s[i])) return null;
        e = i + 1;
        while (e < n && methodChar(s[e])) e++;
        if (!is(s, e, ' ')) return null;
        g[10] = part(s, i, e);
        // ([^ "\\?]++) : the path
        i = e + 1;
        e = i;
        while (e < n && pathChar(s[e])) e++;
        if (e == i) return null;
        g[11] = part(s, i, e);
        // (\?[^ "\\]*+)? : the query, '?' included
        i = e;
        if (is(s, i, '?')) {
            e = i + 1;
            while (e < n && queryChar(s[e])) e++;
            g[12] = part(s, i, e);
            i = e;
        } else {
            g[12] = UTF8String.EMPTY_UTF8;
        }
        // ' ' ([A-Z][A-Z0-9]*+/\d++(?:\.\d++)?) '" '
        if (!is(s, i, ' ')) return null;
        i++;
        if (i >= n || !upper(s[i])) return null;
        e = i + 1;
        while (e < n && (upper(s[e]) || digit(s[e]))) e++;
        if (!is(s, e, '/')) return null;
        e = runDigits(s, e + 1);
        if (e < 0) return null;
        if (is(s, e, '.')) {
            e = runDigits(s, e + 1);
            if (e < 0) return null;
        }
        if (!is(s, e, '"') || !is(s, e + 1, ' ')) return null;
        g[13] = part(s, i, e);
        // ([1-5]\d\d) ' '
        i = e + 2;
        if (i + 4 > n || s[i] < '1' || s[i] > '5' || !digits(s, i + 1, 2) || s[i + 3] != ' ') {
            return null;
        }
        g[14] = part(s, i, i + 3);
        // (\d{1,18}|-)
        i += 4;
        if (is(s, i, '-')) {
            e = i + 1;
        } else {
            e = runDigits(s, i);
            if (e < 0 || e - i > 18) return null;
        }
        g[15] = part(s, i, e);
        // (?: "([^"\\]*+)" "([^"\\]*+)"(?: [\s\S]*)?)?\z
        i = e;
        g[16] = UTF8String.EMPTY_UTF8;
        g[17] = UTF8String.EMPTY_UTF8;
        if (i == n) return g;
        if (!is(s, i, ' ') || !is(s, i + 1, '"')) return null;
        i += 2;
        e = i;
        while (e < n && quotedChar(s[e])) e++;
        if (!is(s, e, '"') || !is(s, e + 1, ' ') || !is(s, e + 2, '"')) return null;
        g[16] = part(s, i, e);
        i = e + 3;
        e = i;
        while (e < n && quotedChar(s[e])) e++;
        if (!is(s, e, '"')) return null;
        g[17] = part(s, i, e);
        e++;
        return e == n || s[e] == ' ' ? g : null;
    }

    /** Bytes begin..end of the line, not copied (Spark copies them into its row). */
    private static UTF8String part(byte[] s, int begin, int end) {
        return UTF8String.fromBytes(s, begin, end - begin);
    }

    /** logformat.TRIM: what a line is stripped of at both ends. */
    private static boolean blank(byte b) {
        return b == ' ' || b == '\t' || b == '\r' || b == '\n';
    }

    /**
     * Well-formed UTF-8 (the Unicode standard's table 3-7: no overlong form, no surrogate,
     * nothing past U+10FFFF), without U+0001.
     */
    static boolean plain(byte[] s) {
        final int n = s.length;
        int i = 0;
        while (i < n) {
            final int b = s[i];
            if (b >= 0) {
                if (b == 1) return false;
                i++;
                continue;
            }
            final int lead = b & 0xff;
            int more;
            int lo = 0x80;
            int hi = 0xbf;
            if (lead >= 0xc2 && lead <= 0xdf) {
                more = 1;
            } else if (lead == 0xe0) {
                more = 2;
                lo = 0xa0;
            } else if (lead == 0xed) {
                more = 2;
                hi = 0x9f;
            } else if (lead >= 0xe1 && lead <= 0xef) {
                more = 2;
            } else if (lead == 0xf0) {
                more = 3;
                lo = 0x90;
            } else if (lead == 0xf4) {
                more = 3;
                hi = 0x8f;
            } else if (lead >= 0xf1 && lead <= 0xf3) {
                more = 3;
            } else {
                return false;
            }
            if (i + more >= n) return false;
            final int second = s[i + 1] & 0xff;
            if (second < lo || second > hi) return false;
            for (int k = 2; k <= more; k++) {
                final int next = s[i + k] & 0xff;
                if (next < 0x80 || next > 0xbf) return false;
            }
            i += more + 1;
        }
        return true;
    }

    private static boolean is(byte[] s, int i, char ch) {
        return i < s.length && s[i] == ch;
    }

    private static boolean digit(byte b) {
        return b >= '0' && b <= '9';
    }

    private static boolean upper(byte b) {
        return b >= 'A' && b <= 'Z';
    }

    private static boolean lower(byte b) {
        return b >= 'a' && b <= 'z';
    }

    private static boolean letter(byte b) {
        return upper(b) || lower(b);
    }

    private static boolean methodChar(byte b) {
        return letter(b) || digit(b) || b == '_' || b == '-';
    }

    private static boolean pathChar(byte b) {
        return b != ' ' && b != '"' && b != '\\' && b != '?';
    }

    private static boolean queryChar(byte b) {
        return b != ' ' && b != '"' && b != '\\';
    }

    private static boolean quotedChar(byte b) {
        return b != '"' && b != '\\';
    }

    /** Whether s has {@code count} ASCII digits from {@code i}. */
    private static boolean digits(byte[] s, int i, int count) {
        if (i + count > s.length) return false;
        for (int k = i; k < i + count; k++) {
            if (!digit(s[k])) return false;
        }
        return true;
    }

    /** The end of the run of non-space bytes from {@code i}. */
    private static int runNotSpace(byte[] s, int i) {
        while (i < s.length && s[i] != ' ') i++;
        return i;
    }

    /** The end of a run of one or more digits from {@code i}, or -1. */
    private static int runDigits(byte[] s, int i) {
        int e = i;
        while (e < s.length && digit(s[e])) e++;
        return e == i ? -1 : e;
    }
}
