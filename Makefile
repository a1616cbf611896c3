# Builds and installs chasquid, as chasquid's own Makefile does:
#
#   make                          # swift build -c release
#   sudo make install-binaries    # the programs and their man pages
#   sudo make install-config-skeleton
#                                 # /etc/chasquid (only if absent), the systemd
#                                 # units, the fail2ban filter, /var/lib/chasquid
#
# PREFIX (/usr/local), SYSCONFDIR (/etc), LOCALSTATEDIR (/var) and DESTDIR
# (for packaging: prepended to every path written, never to the paths
# written inside the units) are honoured. docs/install.md says more.

PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
LOCALSTATEDIR ?= /var
DESTDIR ?=
MAIL_USER ?= mail
SWIFT ?= swift
BUILD_DIR ?= .build/release

PROGRAMS = chasquid chasquid-util mda-lmtp maildir-deliver smtp-check
MAN1 = man/chasquid.1 man/chasquid-util.1 man/mda-lmtp.1 man/maildir-deliver.1 man/smtp-check.1
MAN5 = man/chasquid.conf.5
UNITS = chasquid.service chasquid-smtp.socket chasquid-submission.socket chasquid-submission_tls.socket

BINDIR = $(DESTDIR)$(PREFIX)/bin
MANDIR = $(DESTDIR)$(PREFIX)/share/man
CONFDIR = $(DESTDIR)$(SYSCONFDIR)/chasquid
UNITDIR = $(DESTDIR)$(SYSCONFDIR)/systemd/system
DATADIR = $(DESTDIR)$(LOCALSTATEDIR)/lib/chasquid

all:
	$(SWIFT) build -c release

install: install-binaries install-config-skeleton

install-binaries: all
	install -d -m 0755 $(BINDIR) $(MANDIR)/man1 $(MANDIR)/man5
	for p in $(PROGRAMS); do install -m 0755 $(BUILD_DIR)/$$p $(BINDIR)/$$p || exit 1; done
	install -m 0644 $(MAN1) $(MANDIR)/man1/
	install -m 0644 $(MAN5) $(MANDIR)/man5/

# An existing config directory is never touched: this is a skeleton to
# start from, not an upgrade. Units are written only where absent too.
install-config-skeleton:
	if ! [ -d $(CONFDIR) ]; then \
		install -d -m 0755 $(CONFDIR) $(CONFDIR)/certs $(CONFDIR)/domains $(CONFDIR)/hooks; \
		install -m 0644 etc/chasquid/chasquid.conf $(CONFDIR)/chasquid.conf; \
		install -m 0644 etc/chasquid/certs/README $(CONFDIR)/certs/README; \
		install -m 0644 etc/chasquid/domains/README $(CONFDIR)/domains/README; \
		install -m 0755 etc/chasquid/hooks/post-data $(CONFDIR)/hooks/post-data; \
	fi
	install -d -m 0755 $(UNITDIR)
	for u in $(UNITS); do \
		if ! [ -e $(UNITDIR)/$$u ]; then \
			sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
				-e 's|@MAIL_USER@|$(MAIL_USER)|g' \
				etc/systemd/system/$$u > $(UNITDIR)/$$u || exit 1; \
			chmod 0644 $(UNITDIR)/$$u || exit 1; \
		fi; \
	done
	for f in filter.d/chasquid.conf jail.d/chasquid.conf; do \
		install -d -m 0755 $$(dirname $(DESTDIR)$(SYSCONFDIR)/fail2ban/$$f) || exit 1; \
		if ! [ -e $(DESTDIR)$(SYSCONFDIR)/fail2ban/$$f ]; then \
			install -m 0644 etc/fail2ban/$$f $(DESTDIR)$(SYSCONFDIR)/fail2ban/$$f || exit 1; \
		fi; \
	done
	if ! [ -d $(DATADIR) ]; then \
		install -d -m 0700 $(DATADIR); \
		if [ "$$(id -u)" = 0 ] && id $(MAIL_USER) >/dev/null 2>&1; then \
			chown $(MAIL_USER):$(MAIL_USER) $(DATADIR); \
		fi; \
	fi

.PHONY: all install install-binaries install-config-skeleton
