/*-------------------------------------------------------------------------
 *
 * row_scope.c
 *	  What a member may read, as a value the planning node computes.
 *
 * Every row-level security policy compares a column of the row itself with
 * fleet_internal.row_scope(kind): the organizations the caller sees, or
 * the jobs, schedules, operations or enrollment groups of those.  A policy
 * with a subquery would be simpler, but Citus refuses subqueries in
 * policies on distributed and reference tables, and it runs each shard's
 * query on a worker, where a function reading pg_fleet's tables would start
 * a distributed query from inside a shard's.  So the planner hook below
 * puts the set into the query as a constant before any other planner (that
 * is, Citus's) sees it: the shards get a plain "column = ANY (constant)",
 * which every node evaluates alone, and on one server the comparison is a
 * hashed lookup in the array.
 *
 * The set is the caller's: computed for GetUserId() (SET ROLE and SECURITY
 * DEFINER callers included) by fleet_internal.row_scope_of(kind, role),
 * run as the bootstrap superuser so that the policies of the tables it
 * reads do not apply to it.  Where Citus holds the tables, a shard's own
 * copy of the policies is evaluated on the node that holds it, as the
 * member: there fleet_internal.row_scope_on_node() computes the same set
 * from that node's copies of the reference tables.  It is computed again for every statement
 * (cached for one command of one transaction), and a plan that holds it is
 * transient: a plan cached by PL/pgSQL or PREPARE is made again in the
 * next transaction, so a membership granted or revoked counts from then.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/planner.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "pg_fleet.h"

PG_FUNCTION_INFO_V1(row_scope);

static planner_hook_type prev_planner = NULL;

/* One computed set: for whom, of what, and the array itself. */
typedef struct ScopeEntry
{
	Oid			userid;
	Oid			result_type;	/* TEXTARRAYOID or INT8ARRAYOID */
	char		kind[NAMEDATALEN];
	Datum		value;
} ScopeEntry;

/* The sets computed in the current command of the current transaction. */
static MemoryContext scope_context = NULL;
static List *scope_entries = NIL;
static LocalTransactionId scope_lxid = InvalidLocalTransactionId;
static CommandId scope_command = InvalidCommandId;

typedef struct ScopeFunctions
{
	Oid			text_scope;		/* fleet_internal.row_scope(text) */
	Oid			id_scope;		/* fleet_internal.row_scope_ids(text) */
	bool		replaced;
} ScopeFunctions;

/* Forgets the sets when the transaction or the command changed. */
static void
scope_cache_check(void)
{
	CommandId	command = GetCurrentCommandId(false);

	if (scope_context == NULL)
		scope_context = AllocSetContextCreate(TopMemoryContext, "pg_fleet row scopes",
											  ALLOCSET_SMALL_SIZES);
	if (scope_lxid != MyProc->lxid || scope_command != command)
	{
		MemoryContextReset(scope_context);
		scope_entries = NIL;
		scope_lxid = MyProc->lxid;
		scope_command = command;
	}
}

/*
 * The set of the given kind for the current user, as an array of
 * result_type, allocated in the caller's memory context.
 */
static Datum
row_scope_compute(const char *kind, Oid result_type)
{
	Oid			userid = GetUserId();
	ListCell   *lc;
	ScopeEntry *entry;
	Oid			save_userid;
	int			save_sec_context;
	Oid			argtypes[2] = {TEXTOID, NAMEOID};
	Datum		args[2];
	bool		isnull;
	Datum		value;
	MemoryContext caller_context = CurrentMemoryContext;
	MemoryContext old;
	NameData	role;
	Oid			fleet;
	bool		on_citus;

	scope_cache_check();
	foreach(lc, scope_entries)
	{
		entry = (ScopeEntry *) lfirst(lc);
		if (entry->userid == userid && entry->result_type == result_type &&
			strcmp(entry->kind, kind) == 0)
			return datumCopy(entry->value, false, -1);
	}

	/* where Citus holds the tables, from this node's copies (see access.sql) */
	fleet = get_namespace_oid("fleet", true);
	on_citus = OidIsValid(fleet) && citus_table(get_relname_relid("organizations", fleet));

	namestrcpy(&role, GetUserNameFromId(userid, false));
	args[0] = CStringGetTextDatum(kind);
	args[1] = NameGetDatum(&role);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(BOOTSTRAP_SUPERUSERID,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args(psprintf(result_type == INT8ARRAYOID
									   ? "SELECT fleet_internal.%s($1, $2)::bigint[]"
									   : "SELECT fleet_internal.%s($1, $2)",
									   on_citus ? "row_scope_on_node" : "row_scope_of"),
							  2, argtypes, args, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "fleet_internal.row_scope_of did not return a row");
	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown row scope \"%s\"", kind),
				 errhint("The scopes are organizations, administered_organizations, jobs, scheduled_jobs, device_operations and enrollment_groups.")));

	old = MemoryContextSwitchTo(scope_context);
	entry = palloc0(sizeof(ScopeEntry));
	entry->userid = userid;
	entry->result_type = result_type;
	strlcpy(entry->kind, kind, NAMEDATALEN);
	entry->value = datumCopy(value, false, -1);
	scope_entries = lappend(scope_entries, entry);
	MemoryContextSwitchTo(old);

	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec_context);

	old = MemoryContextSwitchTo(caller_context);
	value = datumCopy(entry->value, false, -1);
	MemoryContextSwitchTo(old);
	return value;
}

/*
 * fleet_internal.row_scope(kind) and fleet_internal.row_scope_ids(kind):
 * what a policy calls when the planner hook did not replace the call (a
 * plan made before the hook was installed, or an expression evaluated
 * outside a query).
 */
Datum
row_scope(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			result_type = get_fn_expr_rettype(fcinfo->flinfo);

	PG_RETURN_DATUM(row_scope_compute(kind, result_type == INT8ARRAYOID ? INT8ARRAYOID : TEXTARRAYOID));
}

/* The oid of fleet_internal.<name>(text), InvalidOid when there is none. */
static Oid
scope_function(Oid namespace, const char *name)
{
	oidvector  *argtypes;
	Oid			text = TEXTOID;

	argtypes = buildoidvector(&text, 1);
	return GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
						   CStringGetDatum(name), PointerGetDatum(argtypes),
						   ObjectIdGetDatum(namespace));
}

/* A call of a scope function with a constant kind becomes its value. */
static Node *
scope_mutator(Node *node, ScopeFunctions *functions)
{
	if (node == NULL)
		return NULL;
	if (IsA(node, FuncExpr))
	{
		FuncExpr   *call = (FuncExpr *) node;

		if ((call->funcid == functions->text_scope || call->funcid == functions->id_scope) &&
			list_length(call->args) == 1 && IsA(linitial(call->args), Const) &&
			!castNode(Const, linitial(call->args))->constisnull)
		{
			Const	   *kind = castNode(Const, linitial(call->args));
			Oid			result_type = call->funcid == functions->id_scope ? INT8ARRAYOID : TEXTARRAYOID;

			functions->replaced = true;
			return (Node *) makeConst(result_type, -1, get_typcollation(result_type), -1,
									  row_scope_compute(TextDatumGetCString(kind->constvalue), result_type),
									  false, false);
		}
	}
	return expression_tree_mutator(node, scope_mutator, functions);
}

/* Every policy qualifier of the query and of the queries inside it. */
static bool
scope_query_walker(Node *node, ScopeFunctions *functions)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		Query	   *query = (Query *) node;
		ListCell   *lc;

		foreach(lc, query->rtable)
		{
			RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);

			if (rte->securityQuals != NIL)
				rte->securityQuals = (List *) scope_mutator((Node *) rte->securityQuals, functions);
		}
		return query_tree_walker(query, scope_query_walker, functions, 0);
	}
	return expression_tree_walker(node, scope_query_walker, functions);
}

/* Whether any range table entry, at any depth, has policy qualifiers. */
static bool
has_security_quals_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		Query	   *query = (Query *) node;
		ListCell   *lc;

		foreach(lc, query->rtable)
			if (((RangeTblEntry *) lfirst(lc))->securityQuals != NIL)
				return true;
		return query_tree_walker(query, has_security_quals_walker, context, 0);
	}
	return expression_tree_walker(node, has_security_quals_walker, context);
}

static PlannedStmt *
row_scope_planner(Query *parse, const char *query_string, int cursor_options,
				  ParamListInfo bound_params)
{
	ScopeFunctions functions = {InvalidOid, InvalidOid, false};
	PlannedStmt *result;

	/* (superusers, the engine and tables without policies pay one walk) */
	if (IsTransactionState() && has_security_quals_walker((Node *) parse, NULL))
	{
		Oid			namespace = get_namespace_oid("fleet_internal", true);

		if (OidIsValid(namespace))
		{
			functions.text_scope = scope_function(namespace, "row_scope");
			functions.id_scope = scope_function(namespace, "row_scope_ids");
			if (OidIsValid(functions.text_scope) || OidIsValid(functions.id_scope))
				scope_query_walker((Node *) parse, &functions);
		}
	}

	if (prev_planner)
		result = prev_planner(parse, query_string, cursor_options, bound_params);
	else
		result = standard_planner(parse, query_string, cursor_options, bound_params);

	if (functions.replaced)
		result->transientPlan = true;
	return result;
}

void
row_scope_init(void)
{
	prev_planner = planner_hook;
	planner_hook = row_scope_planner;
}
