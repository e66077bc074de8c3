-- Every statement that records changes announces them on the channel
-- spk_changes when its transaction commits (a rolled-back change announces
-- nothing), so that instances listening there apply them at once instead
-- of at their next read of the log. One notification per kind and account
-- of the statement: "<seq>:<kind>:<account id>", with the statement's
-- highest seq for them. A single change (the usual case) is announced with
-- its own seq; 10,000 keys of one account revoked in one statement make
-- one notification, not 10,000. Nothing derived from a key is sent. An
-- account id too long for a payload is left out (then listeners read the
-- log).
CREATE FUNCTION spk_notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('spk_changes', s.seq::text || ':' || s.kind ||
		CASE WHEN octet_length(s.account_id) <= 1000 THEN ':' || s.account_id ELSE '' END)
	FROM (SELECT max(seq) AS seq, kind, account_id FROM new_changes
		GROUP BY kind, account_id ORDER BY 1) AS s;
	RETURN NULL;
END
$$;

CREATE TRIGGER changes_notify AFTER INSERT ON changes
	REFERENCING NEW TABLE AS new_changes
	FOR EACH STATEMENT EXECUTE FUNCTION spk_notify_changes();
