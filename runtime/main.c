/* main.c — the `sao` command: LuaJIT embedded, the command line, and the host side of the REPL.
 *
 *   sao [options] [script [args...]]
 *
 * Like the `lua` interpreter: -e/-l run in order, then the script (or stdin), then the REPL when
 * asked (-i, --repl, SAO_REPL=1) or when nothing else was given and stdin is a terminal.
 * The script sees a global `arg` table (arg[0] = script, arg[1..] its arguments, interpreter
 * options at negative indices) and the same arguments as `...`.
 *
 * The Lua tree is found next to the binary: <exedir>/lua (source tree) or
 * <exedir>/../share/sao/lua (after `make install`); it is prepended to package.path and its root
 * is the global SAO_HOME (where build/sao_cdef.h or sao_cdef.h and recipes/ live).
 *
 * The REPL itself is Lua (lua/sao/repl.lua). This file gives it one small preloaded module,
 * `sao.host`: readline with completion and history, isatty, and the interrupt flag.
 *
 * Ctrl-C: the handler sets the library's interrupt flag (C loops poll sao_interrupt_pending())
 * and, as lua.c does, a count hook that raises "interrupted!" at the next Lua instruction the
 * interpreter runs. A second Ctrl-C before the first was picked up (a JIT-compiled loop never
 * reaches the hook) restores the default action and kills the process.
 * Graceful stops (sao_stop_graceful, asked by the train stage): SIGTERM (a cluster's preemption)
 * and the first Ctrl-C only set the stop flag, which the job polls between steps to save and stop;
 * a second Ctrl-C then interrupts as above. Without a graceful job SIGTERM ends the process.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>
#include <readline/history.h>
#include <readline/readline.h>

#include "sao.h"

static const char *progname = "sao";
static lua_State *globalL;          /* the one state, for the signal handler */

/* ---- errors and calls ------------------------------------------------------------------- */

/* Prints "sao: message" (the message usually carries its traceback) to stderr. */
static void report(const char *msg) {
    fprintf(stderr, "%s: %s\n", progname, msg);
    fflush(stderr);
}

/* Message handler: turns any error object into a string and appends a traceback. */
static int msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    sao_interrupt_set(0);           /* delivered: it is a Lua error from here on */
    luaL_error(L, "interrupted!");
}

static void say(const char *msg, size_t n) {
    ssize_t w = write(STDERR_FILENO, msg, n);
    (void)w;
}

static void on_sigterm(int sig) {
    if (!sao_stop_graceful(-1)) {   /* nothing to save: the default action */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    static const char msg[] = "\nsao: SIGTERM: finishing this step, then saving a checkpoint and stopping\n";
    if (!sao_stop_requested()) say(msg, sizeof msg - 1);
    sao_stop_set(1);
}

static void on_sigint(int sig) {
    if (sao_stop_graceful(-1) && !sao_stop_requested()) {
        static const char msg[] = "\nsao: Ctrl-C: finishing this step, then saving a checkpoint and stopping "
                                  "(Ctrl-C again to interrupt at once)\n";
        say(msg, sizeof msg - 1);
        sao_stop_set(1);
        return;
    }
    if (sao_interrupt_pending()) {  /* the first one was never picked up: give up */
        static const char msg[] = "\nsao: second Ctrl-C, quitting (JIT-compiled Lua loops "
                                  "cannot be interrupted; C loops poll the flag)\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    sao_interrupt_set(1);
    lua_sethook(globalL, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* No SA_RESTART: a blocking read (readline's poll, getline) returns EINTR so the REPL can react. */
static void install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_sigterm;
    sa.sa_flags = SA_RESTART;   /* it only sets a flag: nothing needs to wake up */
    sigaction(SIGTERM, &sa, NULL);
}

/* Calls the function below its `narg` arguments; reports an error and returns its status. */
static int docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, base);
    int status = lua_pcall(L, narg, nres, base);
    lua_remove(L, base);
    if (status != 0) {
        report(lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return status;
}

static int dochunk(lua_State *L, int status) {
    if (status == 0) return docall(L, 0, 0);
    report(lua_tostring(L, -1));    /* syntax error or unreadable file */
    lua_pop(L, 1);
    return status;
}

static int dostring(lua_State *L, const char *code, const char *name) {
    return dochunk(L, luaL_loadbuffer(L, code, strlen(code), name));
}

/* -l name: name = require(name) */
static int dolibrary(lua_State *L, const char *name) {
    lua_getglobal(L, "require");
    lua_pushstring(L, name);
    int status = docall(L, 1, 1);
    if (status == 0) lua_setglobal(L, name);
    return status;
}

/* Runs the script at argv[0] ("-" or NULL: stdin) with argv[1..n-1] as `...`. */
static int doscript(lua_State *L, char **argv, int n) {
    const char *fname = (argv && strcmp(argv[0], "-") != 0) ? argv[0] : NULL;
    int status = luaL_loadfile(L, fname);
    if (status != 0) return dochunk(L, status);
    for (int i = 1; i < n; i++) lua_pushstring(L, argv[i]);
    return docall(L, n > 0 ? n - 1 : 0, 0);
}

/* ---- finding the Lua tree ---------------------------------------------------------------- */

/* 1 when dir/suffix exists and is a directory (want_dir) or a regular file (!want_dir). */
static int path_is(const char *dir, const char *suffix, int want_dir) {
    char path[PATH_MAX];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/%s", dir, suffix) >= (int)sizeof path) return 0;
    if (stat(path, &st) != 0) return 0;
    return want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
}

/* Writes the sao root (the directory holding lua/) into `home`. Source tree first, then the
 * installed layout; when neither holds lua/sao/init.lua, the first with a lua/ directory. */
static void find_home(char *home, size_t size) {
    char exe[PATH_MAX], cand[2][PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(home, size, ".");
        return;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    if (snprintf(cand[0], sizeof cand[0], "%s", exe) >= (int)sizeof cand[0] ||
        snprintf(cand[1], sizeof cand[1], "%s/../share/sao", exe) >= (int)sizeof cand[1]) {
        snprintf(home, size, ".");
        return;
    }
    int pick = -1;
    for (int i = 0; i < 2 && pick < 0; i++)
        if (path_is(cand[i], "lua/sao/init.lua", 0)) pick = i;
    for (int i = 0; i < 2 && pick < 0; i++)
        if (path_is(cand[i], "lua", 1)) pick = i;
    if (pick < 0) pick = 0;
    if (!realpath(cand[pick], home)) snprintf(home, size, "%s", cand[pick]);
}

/* package.path = <home>/lua/?.lua;<home>/lua/?/init.lua;<what LUA_PATH or the default gave> */
static void setup_paths(lua_State *L) {
    char home[PATH_MAX];
    find_home(home, sizeof home);
    lua_pushstring(L, home);
    lua_setglobal(L, "SAO_HOME");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s", home, home, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* ---- sao.host: what the REPL needs from C ------------------------------------------------- */

static const char completer_key = 'c';  /* registry slot of the Lua completion function */
static char *cb_line;
static int cb_done;

static void on_line(char *line) {
    cb_line = line;
    cb_done = 1;
    rl_callback_handler_remove();   /* keeps readline from redrawing the prompt */
}

/* Removes a pending Ctrl-C: the flag and our hook (not a debug hook the user set). */
static void clear_interrupt(lua_State *L) {
    sao_interrupt_set(0);
    if (lua_gethook(L) == lstop) lua_sethook(L, NULL, 0, 0);
}

/* Longest common prefix of the candidates, which readline puts in place of the word. */
static char *common_prefix(char **m, int n) {
    size_t len = strlen(m[0]);
    for (int i = 1; i < n; i++) {
        size_t k = 0;
        while (k < len && m[i][k] == m[0][k]) k++;
        len = k;
    }
    return strndup(m[0], len);
}

/* readline asks for completions of the word text = line[start..end); Lua answers with a list
 * of whole replacement words (completer(word, line, start) -> { "math.floor(", ... }). */
static char **complete(const char *text, int start, int end) {
    (void)end;
    lua_State *L = globalL;
    rl_attempted_completion_over = 1;       /* never fall back to file names */
    rl_completion_suppress_append = 1;      /* the candidates carry their own '(' or '.' */
    int top = lua_gettop(L);
    lua_pushlightuserdata(L, (void *)&completer_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isfunction(L, -1)) goto none;
    lua_pushstring(L, text);
    lua_pushstring(L, rl_line_buffer);
    lua_pushinteger(L, start);
    if (lua_pcall(L, 3, 1, 0) != 0 || !lua_istable(L, -1)) goto none;
    int n = (int)lua_objlen(L, -1);
    if (n <= 0) goto none;
    char **m = calloc((size_t)n + 2, sizeof *m);
    if (!m) goto none;
    int k = 0;
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        const char *s = lua_tostring(L, -1);
        if (s) m[1 + k++] = strdup(s);
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    if (k == 0) {
        free(m);
        return NULL;
    }
    m[0] = k == 1 ? strdup(m[1]) : common_prefix(m + 1, k);
    if (k == 1) {                           /* readline's convention for a single match */
        free(m[1]);
        m[1] = NULL;
    }
    return m;
none:
    lua_settop(L, top);
    return NULL;
}

/* host.readline(prompt) -> line | nil (end of input) | false (Ctrl-C).
 * A terminal gets readline (callback mode, so Ctrl-C can abandon the line); anything else is
 * read with getline, without a prompt or echo. */
static int host_readline(lua_State *L) {
    const char *prompt = luaL_optstring(L, 1, "");
    clear_interrupt(L);
    if (!isatty(STDIN_FILENO)) {
        char *buf = NULL;
        size_t cap = 0;
        errno = 0;
        ssize_t n = getline(&buf, &cap, stdin);
        int interrupted = n < 0 && errno == EINTR && sao_interrupt_pending();
        if (n < 0) {
            free(buf);
            clearerr(stdin);
            clear_interrupt(L);
            if (interrupted) lua_pushboolean(L, 0);
            else lua_pushnil(L);
            return 1;
        }
        if (n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
        lua_pushlstring(L, buf, (size_t)n);
        free(buf);
        return 1;
    }
    cb_done = 0;
    cb_line = NULL;
    rl_callback_handler_install(prompt, on_line);
    while (!cb_done) {
        struct pollfd p = {.fd = fileno(rl_instream ? rl_instream : stdin), .events = POLLIN};
        int r = poll(&p, 1, -1);
        if (r < 0 && errno == EINTR) {
            if (!sao_interrupt_pending()) continue;   /* some other signal (SIGWINCH, ...) */
            rl_free_line_state();
            rl_callback_sigcleanup();
            rl_echo_signal_char(SIGINT);
            rl_callback_handler_remove();
            fputc('\n', stdout);
            fflush(stdout);
            clear_interrupt(L);
            lua_pushboolean(L, 0);
            return 1;
        }
        if (r < 0) {
            rl_callback_handler_remove();
            break;
        }
        rl_callback_read_char();
    }
    clear_interrupt(L);
    if (!cb_line) {
        fputc('\n', stdout);        /* Ctrl-D: leave the shell prompt on a fresh line */
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, cb_line);
    free(cb_line);
    return 1;
}

static int host_add_history(lua_State *L) {
    const char *line = luaL_checkstring(L, 1);
    if (*line) add_history(line);
    return 0;
}

/* host.set_completer(fn): fn(word, line, start) -> list of replacement words */
static int host_set_completer(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_pushlightuserdata(L, (void *)&completer_key);
    lua_pushvalue(L, 1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    rl_attempted_completion_function = complete;
    return 0;
}

static int host_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, STDIN_FILENO)));
    return 1;
}

/* host.interrupted() -> true when a Ctrl-C is pending; host.clear_interrupt() forgets it. */
static int host_interrupted(lua_State *L) {
    lua_pushboolean(L, sao_interrupt_pending());
    return 1;
}

static int host_clear_interrupt(lua_State *L) {
    clear_interrupt(L);
    return 0;
}

static int luaopen_sao_host(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"readline", host_readline},       {"add_history", host_add_history},
        {"set_completer", host_set_completer}, {"isatty", host_isatty},
        {"interrupted", host_interrupted}, {"clear_interrupt", host_clear_interrupt},
        {NULL, NULL}};
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    lua_pushfstring(L, "sao %s (%s)", sao_version(), LUAJIT_VERSION);
    lua_setfield(L, -2, "version");
    rl_readline_name = "sao";       /* for $if sao in ~/.inputrc */
    rl_catch_signals = 0;           /* Ctrl-C is ours (see host_readline) */
    rl_completer_word_break_characters = " \t\n\"'`<>=;+-*/%^~#,|&{}()[]";
    return 1;
}

/* ---- the command line --------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: %s [options] [script [args...]]\n"
            "  -e code     run code (may repeat; runs before the script)\n"
            "  -l name     require library name into the global name\n"
            "  -i          enter the REPL after running the script\n"
            "  --repl      enter the REPL even when stdin is not a terminal (also SAO_REPL=1)\n"
            "  -           read the script from stdin (following words are its arguments)\n"
            "  --          stop handling options\n"
            "  -v, --version  print the version\n"
            "  -h, --help     print this help\n"
            "With no script and no -e: the REPL on a terminal, else stdin is run as a script.\n"
            "Scripts see `arg` (arg[0] = script) and `...`; `require \"sao\"` works anywhere.\n",
            progname);
}

/* The `arg` table: arg[0] = script, arguments after it positive, the interpreter and its
 * options negative. With no script, arg[0] is the interpreter. */
static void create_arg(lua_State *L, char **argv, int argc, int script) {
    lua_createtable(L, argc - script - 1 > 0 ? argc - script - 1 : 0, script + 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - script);
    }
    lua_setglobal(L, "arg");
}

static int run_repl(lua_State *L, int interactive) {
    lua_getglobal(L, "require");
    lua_pushliteral(L, "sao.repl");
    if (docall(L, 1, 1) != 0) return 1;
    lua_getfield(L, -1, "run");
    lua_remove(L, -2);
    lua_createtable(L, 0, 1);
    lua_pushboolean(L, interactive);
    lua_setfield(L, -2, "interactive");
    return docall(L, 1, 0) != 0;
}

/* OpenMP's idle workers spin by default, stealing the cores OpenBLAS's own threads need between
 * parallel regions (measured: the DiT forward at 0.38 of sgemm speed spinning, 0.85-0.90 passive).
 * libgomp reads OMP_WAIT_POLICY when it is loaded, before main, so set it and re-execute once. A
 * value the user set is kept. */
static void passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);   /* returns only on failure: then run as we are */
}

int main(int argc, char **argv) {
    passive_openmp(argv);
    /* pass 1: options up to the script; -e/-l are run in pass 2, in order */
    int script = 0, want_repl = 0, has_e = 0;
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') break;             /* the script */
        if (strcmp(a, "-") == 0) break;     /* the script is stdin */
        if (strcmp(a, "--") == 0) { i++; break; }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); return 0; }
        if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
            printf("sao %s (%s)\n", sao_version(), LUAJIT_VERSION);
            return 0;
        }
        if (strcmp(a, "-i") == 0 || strcmp(a, "--repl") == 0) { want_repl = 1; continue; }
        if (strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: '%s' needs an argument\n", progname, a);
                usage(stderr);
                return 1;
            }
            has_e |= a[1] == 'e';
            i++;
            continue;
        }
        fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
        usage(stderr);
        return 1;
    }
    script = i < argc ? i : 0;
    const char *env_repl = getenv("SAO_REPL");
    if (env_repl && *env_repl && strcmp(env_repl, "0") != 0) want_repl = 1;

    lua_State *L = luaL_newstate();
    if (!L) {
        report("cannot create the Lua state: out of memory");
        return 1;
    }
    globalL = L;
    luaL_openlibs(L);
    setup_paths(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_sao_host);
    lua_setfield(L, -2, "sao.host");
    lua_pop(L, 2);
    create_arg(L, argv, argc, script);
    install_sigint();

    int status = 0;
    for (i = 1; i < argc && (script == 0 || i < script) && status == 0; i++) {
        if (strcmp(argv[i], "-e") == 0) status = dostring(L, argv[++i], "=(command line)");
        else if (strcmp(argv[i], "-l") == 0) status = dolibrary(L, argv[++i]);
        else if (strcmp(argv[i], "--") == 0 || strcmp(argv[i], "-") == 0) break;
    }
    if (status == 0 && script) {
        status = doscript(L, argv + script, argc - script);
    } else if (status == 0 && !has_e && !want_repl) {
        if (isatty(STDIN_FILENO)) status = run_repl(L, 1);
        else status = doscript(L, NULL, 0);
    }
    if (status == 0 && want_repl) status = run_repl(L, isatty(STDIN_FILENO));
    lua_close(L);
    return status == 0 ? 0 : 1;
}
