/* json.h — a small strict JSON reader for the C side (safetensors headers, model configs).
 * Lua code uses lua-cjson; C needs only to read. The parse builds a tree of nodes in one
 * allocation-per-node pass; strings are unescaped (\uXXXX to UTF-8). Internal to runtime/. */
#ifndef SAO_JSON_H
#define SAO_JSON_H
#include <stddef.h>

typedef enum { SAO_JNULL, SAO_JBOOL, SAO_JNUM, SAO_JSTR, SAO_JARR, SAO_JOBJ } sao_jtype;

typedef struct sao_json {
    sao_jtype type;
    double num;                 /* JNUM, JBOOL (0/1) */
    char *str;                  /* JSTR value; for members of an object, `key` holds the name */
    char *key;
    struct sao_json *child;     /* first element / member */
    struct sao_json *next;      /* next sibling */
    size_t start, end;          /* byte range of this value in the source text */
} sao_json;

/* Parses `len` bytes. Returns NULL on error with a message (with byte offset) in err. */
sao_json *sao_json_parse(const char *text, size_t len, char *err, size_t errlen);
void sao_json_free(sao_json *j);
sao_json *sao_json_get(const sao_json *obj, const char *key);  /* member or NULL */
size_t sao_json_len(const sao_json *arr);

#endif
