/* Hex digits, for the few places that read them (%XX escapes, the envelope key). */
#ifndef HERALD_HEX_H
#define HERALD_HEX_H

/* 0..15 for a hex digit of either case, -1 otherwise. */
static inline int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
